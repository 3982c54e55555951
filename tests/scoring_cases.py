"""Settings shared by the tests that compare scoring with a plain computation."""

from __future__ import annotations

from vigos.training.config import ViGOSConfig

# Two valid rollouts (a description, a reasoning, a boxed answer) and an invalid one, as text after the
# "<description>" pre-fill; rows alternate between the scoring_setup fixture's two examples.
COMPLETIONS = [
    " A red square. </description>\n<think> It is red. </think>\n\\boxed{red}<|im_end|>",
    " A blue sky on the top. </description>\n<think> The sky is blue, so blue. </think>\n\\boxed{blue}<|im_end|>",
    " red red </description> no think \\boxed{red}<|im_end|>",
]


def unclipped_config(**kw) -> ViGOSConfig:
    """A config without token clips (every supervised token counts as computed) and small loss chunks
    (several per term), with ``kw`` on top."""
    base = dict(
        output_dir="unused",
        report_to="none",
        token_loss_clip=None,
        description_end_clip=None,
        reasoning_start_clip=None,
        loss_chunk_size=3,
    )
    return ViGOSConfig(**{**base, **kw})
