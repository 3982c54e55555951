"""vigos: visually grounded on-policy self-distillation (ViGOS) and multimodal OPSD for VLMs.

The public entry points are importable from the package root; they load on
first use, so ``import vigos`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ViGOSConfig": "vigos.config",
    "ViGOSTrainer": "vigos.trainer",
    "Scorer": "vigos.scoring",
    "ScoreOutput": "vigos.scoring",
    "score_completions": "vigos.scoring",
    "make_teacher_policy": "vigos.teachers",
    "TeacherTerm": "vigos.teachers",
    "SpanParser": "vigos.spans",
    "HFGenerateRollout": "vigos.rollout",
    "SamplingParams": "vigos.rollout",
    "Example": "vigos.data",
    "load_examples": "vigos.data",
    "make_tiny": "vigos.tiny",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vigos' has no attribute {name!r}")
