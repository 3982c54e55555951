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


def vocabulary_difference(student_tokenizer: Any, teacher_tokenizer: Any) -> str | None:
    """Why a teacher's tokenizer cannot grade the student's tokens, or None when both map every token
    to the same id (the teacher must read the student's token ids as the student wrote them)."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if len(student) != len(teacher):
        return f"the student's tokenizer has {len(student)} tokens, the teacher's {len(teacher)}"
    differing = sorted(token for token, index in student.items() if teacher.get(token) != index)
    if differing:
        first = differing[0]
        return (
            f"{len(differing)} tokens have other ids, e.g. {first!r}: {student[first]} in the student's, "
            f"{teacher.get(first)} in the teacher's"
        )
    return None


def _image_processing_difference(student_processor: Any, teacher_processor: Any) -> str | None:
    """Why the teacher's image processor would turn an image into other pixels or placeholders, or None."""
    student, teacher = (
        {k: v for k, v in p.image_processor.to_dict().items() if not k.startswith("_")}
        for p in (student_processor, teacher_processor)
    )
    differing = sorted(key for key in student.keys() | teacher.keys() if student.get(key) != teacher.get(key))
    if differing:
        first = differing[0]
        return (
            f"its image processor differs in {differing}, e.g. {first}: {student.get(first)!r} in the student's, "
            f"{teacher.get(first)!r} in the teacher's"
        )
    return None


def load_teacher_model(
    name: str, student_processor: Any, *, option: str, vocab_rows: int, dtype: torch.dtype, device: torch.device | str
) -> torch.nn.Module:
    """Load another model as a frozen teacher: once, in ``dtype``, on ``device``, without gradient.

    It reads the student's token ids and the student's processed images, so its tokenizer and image
    processor must be the student's. ``name`` is a checkpoint directory, a hub id or
    ``tiny:<arch>[:<size>]``; ``option`` names the setting it came from, for messages; ``vocab_rows``
    is the student's output head's row count, which the teacher's must reach (models of one family may
    pad their heads to different sizes: the rows past the student's are padding, never a token).
    Raises :class:`ConfigError` when it cannot be loaded, its tokenizer or image processing differs
    from the student's, or its head is shorter.
    """
    from vigos.models.modeling import output_head_shape

    model, processor = load_model_and_processor(resolve_model_path(name), dtype=dtype)
    why = vocabulary_difference(student_processor.tokenizer, processor.tokenizer)
    why = why or _image_processing_difference(student_processor, processor)
    if why is None and output_head_shape(model)[0] < vocab_rows:
        why = f"its output head has {output_head_shape(model)[0]} rows, the student's {vocab_rows}"
    if why is not None:
        raise ConfigError(
            f"{option} {name!r} cannot teach this student: {why}. A separate teacher reads the student's tokens and "
            f"images as the student's processor makes them, so it must share its tokenizer and image processing "
            f"(the same model family); leave {option} unset to use the trained model itself."
        )
    model.requires_grad_(False)
    return model.eval().to(device)
