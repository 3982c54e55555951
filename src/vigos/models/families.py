"""What vigos knows of each model family by name: the few tokens and module names that differ between
Qwen-VL, Gemma 3, SmolVLM/Idefics3 and LLaVA-OneVision and that no processor or config states.

Everything else about a family (how an image expands in the prompt, the pixel layout, the token types its
model reads) is taken from its processor at run time (:func:`vigos.models.modeling.encode_image`).
"""

from __future__ import annotations

# The tokens that close a chat turn, where the tokenizer's EOS may be another token: Qwen's <|im_end|>,
# Gemma 3's <end_of_turn> (its EOS is <eos>), SmolVLM's <end_of_utterance>.
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<end_of_turn>", "<end_of_utterance>")

# Processor and tokenizer attributes that name vision markers: image and video placeholders, Gemma 3's
# begin/end of image, Idefics3's tile and global-image markers. A completion must never hold one.
VISION_MARKER_ATTRIBUTES: tuple[str, ...] = (
    "image_token",
    "video_token",
    "boi_token",
    "eoi_token",
    "fake_image_token",
    "global_image_tag",
)
# Qwen-VL's markers, which its processor does not name as attributes.
QWEN_VISION_TOKENS: tuple[str, ...] = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")

# Where each family keeps its vision tower and projector: Qwen-VL's ``visual``, Gemma 3's and LLaVA's
# ``vision_tower`` + ``multi_modal_projector``, Idefics3's ``vision_model`` + ``connector``.
VISION_MODULES: tuple[str, ...] = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector")
