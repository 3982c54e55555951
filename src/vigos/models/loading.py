"""Loading a model and its processor by name: a local directory, a hub id, or an embedded tiny model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vigos.errors import ConfigError


def cache_dir() -> Path:
    """Where built tiny models and generated data live (``$VIGOS_CACHE``, default ``~/.cache/vigos``)."""
    return Path(os.environ.get("VIGOS_CACHE", Path.home() / ".cache" / "vigos"))


def resolve_model_path(name: str) -> str:
    """``tiny:<arch>[:<size>]`` builds (once) a tiny random model of a real architecture; anything else is as given."""
    if not name.startswith("tiny:"):
        return name
    from vigos.models.tiny import make_tiny

    arch, _, size = name[len("tiny:") :].partition(":")
    size = size or "tiny"
    return str(make_tiny(arch, cache_dir() / "models" / f"{arch}-{size}", size=size))


def load_model_and_processor(path: str, *, dtype: torch.dtype | str = "auto") -> tuple[torch.nn.Module, Any]:
    """Load a chat VLM and its processor with the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise ConfigError(
            f"could not load the model {path!r}: {error}\n"
            "Give model_name_or_path a local checkpoint directory (e.g. one written by `vigos make-tiny`) "
            "or a hub id reachable from this machine."
        ) from None
    return model, processor
