"""Settings shared by the tests that compare scoring with a plain computation."""

from __future__ import annotations

from vigos.training.config import ViGOSConfig


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
