"""The training recipe, top to bottom: model → LoRA → data → trainer → save."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vigos import __version__
from vigos.data.examples import load_examples
from vigos.data.rows import Example
from vigos.errors import ConfigError, DataError
from vigos.method.score_types import ScoreOutput
from vigos.method.teachers import TeacherPolicy
from vigos.models.families import VISION_MODULES
from vigos.models.loading import cache_dir, load_model_and_processor, resolve_model_path
from vigos.models.modeling import encode_image, tokenize_prompt
from vigos.prompts import render_prompt
from vigos.training.checkpoints import reporting_full_disk
from vigos.training.config import ViGOSConfig


def resolve_dataset(source: str, seed: int = 0) -> str:
    """``synthetic:<split>:<rows>`` generates (once) the synthetic world; anything else is as given."""
    if not source.startswith("synthetic:"):
        return source
    from vigos.data.synthetic import make_world

    split, _, rows = source[len("synthetic:") :].partition(":")
    rows_count = int(rows or 64)
    paths = make_world(
        cache_dir() / "data" / f"world-{rows_count}-{seed}",
        n_train=rows_count,
        n_eval=max(rows_count // 4, 2),
        seed=seed,
    )
    if split not in paths:
        raise DataError(f"dataset {source!r}: no split {split!r}; the synthetic world has {', '.join(paths)}")
    return str(paths[split])


def language_lora_targets(modules: list[str]) -> str:
    """A PEFT regex for ``modules`` inside the language model only (vision blocks share some names)."""
    return rf"^(?!.*\.({'|'.join(VISION_MODULES)})\.).*\.({'|'.join(modules)})$"


def apply_lora(model: torch.nn.Module, config: ViGOSConfig) -> torch.nn.Module:
    """Wrap ``model`` with a LoRA adapter (the teacher switches it off).

    The modules are matched by name wherever they are, as in the release (in
    Qwen2.5-VL the vision blocks' MLP shares the language model's names), or
    in the language model only when ``lora_vision_tower`` is false.
    """
    from peft import LoraConfig, get_peft_model

    modules = list(config.lora_target_modules)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=modules if config.lora_vision_tower else language_lora_targets(modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def student_prompt_length(processor: Any, config: ViGOSConfig) -> Callable[[str, list[Image.Image]], int]:
    """A function (question, the row's images) → tokens of the student prompt, image tokens included."""
    spec = config.student_spec

    def length(question: str, images: list[Image.Image]) -> int:
        text = render_prompt(processor, spec.text(question), spec.prefill, images=len(images))
        return len(tokenize_prompt(processor, text, encode_image(processor, images)))

    return length


def student_prompt_key(processor: Any, config: ViGOSConfig) -> str:
    """A sha256 of everything :func:`student_prompt_length` computes from, so cached row checks follow it.

    That is the student template and pre-fill as the chat template renders
    them (with one and with two images), the whole tokenizer (its serialized
    form: vocabulary, merges, added tokens), the image processor's settings,
    and the vigos version (the code that counts the tokens).
    """
    spec = config.student_spec
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer serializes whole; a slow one by vocab
    serialized = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = {
        "vigos": __version__,
        "processor": type(processor).__name__,
        "rendered": [render_prompt(processor, spec.text("{question}"), spec.prefill, images=n) for n in (1, 2)],
        "tokenizer": hashlib.sha256(serialized.encode()).hexdigest(),
        "image_processor": processor.image_processor.to_json_string(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def ensure_writable_dir(path: str | Path, option: str = "output_dir") -> Path:
    """Make directory ``path`` (parents too) and prove a file can be written in it; a :class:`ConfigError`
    naming ``option`` and the OS's reason if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a file, not a directory; set {option} to a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Permissions, read-only mounts and ACLs all show only in a real write: try one.
        handle, probe = tempfile.mkstemp(prefix=".vigos-write-check-", dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"{option} {str(path)!r} cannot be written to: {error.strerror or error}; "
            f"set {option} to a directory this user can write to"
        ) from None
    return path


def train(config: ViGOSConfig) -> Path:
    """Run a whole training job from ``config``; returns the directory of the saved model/adapter."""
    from transformers import set_seed

    from vigos.training.trainer import ViGOSTrainer

    if not config.model_name_or_path:
        raise ConfigError("model_name_or_path is not set: name a checkpoint directory or hub id")
    if not config.dataset:
        raise ConfigError("dataset is not set: name a hub id, a saved dataset, a parquet or a JSONL file")
    # Before the model loads: an unwritable output_dir would otherwise fail at the first save.
    ensure_writable_dir(config.output_dir)
    # Under `accelerate launch` every process gets here: let one process per node
    # build the tiny model and the synthetic data, and the others read them after.
    with config.main_process_first(desc="building the model and data caches"):
        model_path = resolve_model_path(config.model_name_or_path)
        dataset_path = resolve_dataset(config.dataset, seed=config.seed)
    model, processor = load_model_and_processor(model_path)
    if config.use_lora:
        # The adapter's initial weights are drawn here, before the Trainer seeds
        # anything: seed them, or two runs of one config start apart.
        set_seed(config.seed)
        model = apply_lora(model, config)
    # One process per node checks the rows (in parallel, cached on disk); the others then read its result.
    with config.main_process_first(desc="checking the data rows"):
        examples, report = load_examples(
            dataset_path,
            split=config.dataset_split,
            lazy=True,
            allow_image_paths_outside=config.allow_image_paths_outside,
            question_field=config.question_field,
            image_field=config.image_field,
            answer_field=config.answer_field,
            images_per_row=config.images_per_row,
            max_images_per_row=config.max_images_per_row,
            bad_rows=config.bad_rows,
            min_image_side=config.min_image_side,
            max_prompt_length=config.max_prompt_length,
            prompt_length=student_prompt_length(processor, config),
            prompt_length_key=student_prompt_key(processor, config),
            limit=config.max_train_rows,
            num_proc=config.data_num_proc,
            cache_dir=cache_dir() / "validation",
        )
    if not len(examples):
        raise DataError(f"no usable rows in {config.dataset!r}: {report.summary()}")
    trainer = ViGOSTrainer(model, config, examples, processor)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    out = Path(config.output_dir)
    with reporting_full_disk(out, "the trained model"):
        trainer.save_model(str(out))
    trainer.create_model_card()  # after the save: PEFT writes a placeholder card of its own there
    # An undestroyed gloo/NCCL group aborts its worker threads at interpreter exit (SIGABRT); so does one
    # destroyed while another process still uses it (the main one writing the card): all wait, then destroy.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return out


def score_completions(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[Example],
    completions: Sequence[str | Sequence[int] | torch.Tensor],
    *,
    method: str = "vigos",
    teacher: TeacherPolicy | None = None,
    config: Any = None,
) -> ScoreOutput:
    """Score ``completions`` (one per example) with ``method``'s teachers and return the loss,
    each term and the metrics. ``config`` is a :class:`vigos.training.config.ViGOSConfig` (defaults if None);
    ``teacher`` defaults to the one ``config.teacher`` names, as in training (``fixed``: the adapter
    switched off, or a frozen copy of a model without one); the roles ``config`` gives another model
    (``perception_teacher_model`` and the like) are loaded for this call."""
    from vigos.training.config import ViGOSConfig

    config = config or ViGOSConfig(method=method, output_dir="vigos_output", report_to="none")
    teacher = teacher or config.teacher_policy(model)
    separate = config.separate_teachers(processor, model)
    return config.build_scorer(processor, teacher=teacher, separate_teachers=separate)(model, examples, completions)
