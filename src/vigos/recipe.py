"""The training recipe, top to bottom: model → LoRA → data → trainer → save."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ViGOSConfig
from .data import ExampleDataset, load_examples
from .modeling import encode_image, tokenize_prompt
from .prompts import DESCRIPTION_OPEN, PromptSpec, render_prompt

def cache_dir() -> Path:
    """Where built tiny models and generated data live (``$VIGOS_CACHE``, default ``~/.cache/vigos``)."""
    return Path(os.environ.get("VIGOS_CACHE", Path.home() / ".cache" / "vigos"))


def resolve_model_path(name: str) -> str:
    """``tiny:<arch>[:<size>]`` builds (once) a tiny random model of a real architecture; anything else is as given."""
    if not name.startswith("tiny:"):
        return name
    from .tiny import make_tiny

    arch, _, size = name[len("tiny:"):].partition(":")
    size = size or "tiny"
    return str(make_tiny(arch, cache_dir() / "models" / f"{arch}-{size}", size=size))


def resolve_dataset(source: str, seed: int = 0) -> str:
    """``synthetic:<split>:<rows>`` generates (once) the synthetic world; anything else is as given."""
    if not source.startswith("synthetic:"):
        return source
    from .synthetic import make_world

    split, _, rows = source[len("synthetic:"):].partition(":")
    rows_count = int(rows or 64)
    paths = make_world(cache_dir() / "data" / f"world-{rows_count}-{seed}", n_train=rows_count,
                       n_eval=max(rows_count // 4, 2), seed=seed)
    if split not in paths:
        raise SystemExit(f"dataset {source!r}: no split {split!r}; the synthetic world has {', '.join(paths)}")
    return str(paths[split])


def load_model_and_processor(path: str, *, dtype: torch.dtype | str = "auto") -> tuple[torch.nn.Module, Any]:
    """Load a chat VLM and its processor with the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise SystemExit(
            f"could not load the model {path!r}: {error}\n"
            "Give model_name_or_path a local checkpoint directory (e.g. one written by `vigos make-tiny`) "
            "or a hub id reachable from this machine."
        ) from None
    return model, processor


def language_lora_targets(modules: list[str]) -> str:
    """A PEFT regex for ``modules`` inside the language model only (vision blocks share some names)."""
    return rf"^(?!.*visual).*\.({'|'.join(modules)})$"


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


def student_prompt_length(processor: Any, config: ViGOSConfig):
    """A function (question, image) → tokens of the student prompt, image tokens included."""
    spec = PromptSpec(config.student_prompt, DESCRIPTION_OPEN)

    def length(question: str, image) -> int:
        text = render_prompt(processor, spec.text(question), spec.prefill)
        return len(tokenize_prompt(processor, text, encode_image(processor, image)))

    return length


def train(config: ViGOSConfig) -> Path:
    """Run a whole training job from ``config``; returns the directory of the saved model/adapter."""
    from transformers import set_seed

    from .trainer import ViGOSTrainer

    if not config.model_name_or_path:
        raise SystemExit("model_name_or_path is not set: name a checkpoint directory or hub id")
    if not config.dataset:
        raise SystemExit("dataset is not set: name a hub id, a saved dataset, a parquet or a JSONL file")
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
    examples, report = load_examples(
        dataset_path,
        split=config.dataset_split,
        question_field=config.question_field,
        image_field=config.image_field,
        answer_field=config.answer_field,
        bad_rows=config.bad_rows,
        min_image_side=config.min_image_side,
        max_prompt_length=config.max_prompt_length,
        prompt_length=student_prompt_length(processor, config),
        limit=config.max_train_rows,
    )
    if not examples:
        raise SystemExit(f"no usable rows in {config.dataset!r}: {report.summary()}")
    trainer = ViGOSTrainer(model, config, ExampleDataset(examples), processor)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    out = Path(config.output_dir)
    trainer.save_model(str(out))
    # An undestroyed gloo/NCCL group aborts its worker threads at interpreter exit (SIGABRT).
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return out
