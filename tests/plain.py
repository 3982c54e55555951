"""The plain, obvious computations that tests compare vigos's optimized paths with.

Nothing here reuses vigos: prompts are rendered with the processor's own chat template and encoded
with the image by the processor, the model returns full logits, and the KL comes from ``F.kl_div``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image


def end_of_turn_id(tokenizer) -> int:
    """The token a chat turn ends with: ``<|im_end|>`` where the vocabulary has it, else the tokenizer's EOS."""
    unk, im_end = tokenizer.unk_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    return im_end if im_end is not None and im_end != unk else tokenizer.eos_token_id


def pieces_to_ids(processor, pieces: list[str], eos: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``pieces`` tokenized one by one (so token boundaries fall where pieces meet), each piece's
    token range, and the end-of-turn token at the end when ``eos``."""
    tok = processor.tokenizer
    ids, bounds = [], []
    for piece in pieces:
        piece_ids = tok(piece, add_special_tokens=False)["input_ids"]
        bounds.append((len(ids), len(ids) + len(piece_ids)))
        ids += piece_ids
    return ids + ([end_of_turn_id(tok)] if eos else []), bounds


def plain_logits(
    model, processor, image: Image.Image | list[Image.Image], user_text: str, prefill: str, appended: list[int]
) -> torch.Tensor:
    """Full logits [len(appended), V] predicting each of ``appended`` after the rendered prompt: the image
    (or each of a list of images), then ``user_text`` (none when empty), the assistant header and ``prefill``.

    Whatever the processor returns goes to the model as it is (every family's own image fields); the token-type
    field it returns, if any, is extended over the appended tokens (text: 0). The chat template writes any
    BOS itself, so the processor adds no special tokens.
    """
    images = image if isinstance(image, list) else [image]
    content = [{"type": "image"} for _ in images] + ([{"type": "text", "text": user_text}] if user_text else [])
    text = (
        processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        + prefill
    )
    enc = processor(text=[text], images=[images], return_tensors="pt", add_special_tokens=False)
    extra = torch.tensor([appended])
    inputs = dict(enc)
    inputs["input_ids"] = torch.cat([enc["input_ids"], extra], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    for field in ("mm_token_type_ids", "token_type_ids"):
        if field in enc:
            inputs[field] = torch.cat([enc[field], torch.zeros_like(extra)], 1)
    out = model(**inputs)
    start = enc["input_ids"].shape[1] - 1
    return out.logits[0, start : start + len(appended)]


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row."""
    return F.kl_div(F.log_softmax(q_logits, -1), F.log_softmax(p_logits, -1), log_target=True, reduction="none").sum(-1)


def clipped(per_token: torch.Tensor, clip: float | None, boundary: int, boundary_clip: float | None) -> torch.Tensor:
    """Each token clipped at ``clip``, the ``boundary`` token at the smaller of both clips (None: no clip)."""
    inf = float("inf")
    clips = torch.full_like(per_token, inf if clip is None else clip)
    clips[boundary] = min(clips[boundary].item(), inf if boundary_clip is None else boundary_clip)
    return torch.minimum(per_token, clips)
