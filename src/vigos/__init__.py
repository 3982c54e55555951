"""vigos: visually grounded on-policy self-distillation (ViGOS) and multimodal OPSD for VLMs.

The public entry points are importable from the package root; they load on
first use, so ``import vigos`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ViGOSConfig": "vigos.training.config",
    "ViGOSTrainer": "vigos.training.trainer",
    "Scorer": "vigos.method.scoring",
    "ScoreOutput": "vigos.method.scoring",
    "score_completions": "vigos.training.recipe",
    "make_teacher_policy": "vigos.method.teachers",
    "TeacherTerm": "vigos.method.teachers",
    "SpanParser": "vigos.method.spans",
    "HFGenerateRollout": "vigos.rollout.hf",
    "SamplingParams": "vigos.rollout.hf",
    "Example": "vigos.data.rows",
    "load_examples": "vigos.data.examples",
    "make_tiny": "vigos.models.tiny",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vigos' has no attribute {name!r}")
