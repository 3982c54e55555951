"""The model card (``README.md``, the Hub's format) written next to a trained model and an exported one.

YAML front matter the Hub reads (base model, library, tags, datasets, pipeline), then what was done: the
method and its teachers, the settings that shape the result, the final logged metrics, and how to load
the weights. `huggingface_hub.ModelCard` renders and parses it; ``push_to_hub`` uploads it with the
weights (``ViGOSTrainer.create_model_card``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

CARD = "README.md"
TAGS = ["vigos", "vision-language", "self-distillation"]
# The settings a reader needs to know what was trained, in this order.
SETTINGS = (
    "method",
    "teacher",
    "perception_teacher_model",
    "reasoning_teacher_model",
    "reference_teacher_model",
    "privileged_teacher_model",
    "perception_divergence",
    "reasoning_divergence",
    "reference_divergence",
    "opsd_divergence",
    "perception_weight",
    "reasoning_weight",
    "reference_weight",
    "opsd_weight",
    "reward_weight",
    "token_loss_clip",
    "distill_temperature",
    "teacher_top_k",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "temperature",
    "use_lora",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "seed",
)
METHODS = {
    "vigos": "ViGOS (visually grounded on-policy self-distillation): a perception teacher that sees only the image "
    "grades the description, a reasoning teacher that sees the question and the reference answer grades the "
    "reasoning and the answer, and a reference teacher repairs malformed rollouts",
    "opsd": "multimodal on-policy self-distillation (OPSD): one privileged teacher that sees the image, the question "
    "and the reference answer grades every token of the student's own rollouts",
    "grpo": "an outcome-reward baseline: the policy gradient of each rollout's graded answer, relative to the other "
    "rollouts of the same prompt",
}


def _hub_dataset(name: str | None) -> list[str] | None:
    """The dataset as the Hub's ``datasets`` field: a hub id (owner/name) that is not a local path."""
    if name and re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists():
        return [name]
    return None


def final_metrics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last logged value of each number in ``log_history`` (the Trainer's), the step included."""
    last: dict[str, float] = {}
    for record in log_history:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                last[key] = value
    return last


def training_card(config: Any, log_history: Sequence[Mapping[str, Any]], *, adapter: bool) -> ModelCard:
    """The card of a training run's output directory (``adapter``: a LoRA adapter, else full weights)."""
    base = str(config.model_name_or_path)
    data = ModelCardData(
        base_model=base,
        library_name="peft" if adapter else "transformers",
        tags=[*TAGS, config.method, *(["lora"] if adapter else [])],
        datasets=_hub_dataset(config.dataset),
        pipeline_tag="image-text-to-text",
    )
    settings = "\n".join(f"| `{name}` | `{getattr(config, name)}` |" for name in _settings(config))
    metrics = {k: v for k, v in final_metrics(log_history).items() if not k.startswith(("time_", "total_flos"))}
    shown = "\n".join(f"| `{key}` | {value:.6g} |" for key, value in sorted(metrics.items()))
    body = f"""
# {Path(config.output_dir).name}

Post-trained from `{base}` with vigos on `{config.dataset}`:
{METHODS[config.method]}.

## Settings

| option | value |
| --- | --- |
{settings}

## Final metrics

{"| metric | value |" + chr(10) + "| --- | ---: |" + chr(10) + shown if shown else "No metrics were logged."}

## How to load

{_loading(base, adapter)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def exported_card(adapter_dir: Path, base: str) -> ModelCard:
    """The card of a merged export: the adapter's card (when vigos wrote one) as a full model's."""
    source = adapter_dir / CARD
    card = ModelCard.load(source) if source.is_file() else None
    if card is None or "vigos" not in (card.data.tags or []):
        data = ModelCardData(base_model=base, library_name="transformers", tags=TAGS, pipeline_tag="image-text-to-text")
        text = f"\n# Merged model\n\nThe LoRA adapter `{adapter_dir}` merged into `{base}` with `vigos export`.\n"
    else:
        data = card.data
        data.library_name = "transformers"
        data.tags = [tag for tag in data.tags if tag != "lora"]
        text = card.text.split("## How to load")[0] + "## How to load\n\n" + _loading(base, adapter=False) + "\n"
        text += f"\nThe adapter was merged into `{base}` with `vigos export`.\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


# The settings of the teachers a method does not have.
_OTHER_METHODS = {
    "vigos": ("privileged_teacher_model", "opsd_divergence", "opsd_weight"),
    "opsd": (
        "perception_teacher_model",
        "reasoning_teacher_model",
        "reference_teacher_model",
        "perception_divergence",
        "reasoning_divergence",
        "reference_divergence",
        "perception_weight",
        "reasoning_weight",
        "reference_weight",
    ),
}


def _settings(config: Any) -> list[str]:
    """The `SETTINGS` that apply to this run and are set."""
    left_out = set(_OTHER_METHODS.get(config.method, ()))
    if config.method == "grpo":  # no teacher at all
        left_out |= {n for n in SETTINGS if "divergence" in n or "teacher" in n or n.endswith("_weight")} - {
            "reward_weight"
        }
        left_out |= {"token_loss_clip", "distill_temperature"}
    if not config.reward_weight:
        left_out.add("reward_weight")
    if config.max_steps and config.max_steps > 0:
        left_out.add("num_train_epochs")
    if not config.use_lora:
        left_out |= {"lora_r", "lora_alpha", "lora_target_modules"}
    return [n for n in SETTINGS if n not in left_out and getattr(config, n, None) is not None]


def _loading(base: str, adapter: bool) -> str:
    if adapter:
        return f"""```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

base = AutoModelForImageTextToText.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "PATH_OR_HUB_ID_OF_THIS_REPO")
processor = AutoProcessor.from_pretrained("PATH_OR_HUB_ID_OF_THIS_REPO")
```

`vigos export --adapter PATH --out DIR` merges the adapter into the base model."""
    return """```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("PATH_OR_HUB_ID_OF_THIS_REPO")
processor = AutoProcessor.from_pretrained("PATH_OR_HUB_ID_OF_THIS_REPO")
```"""
