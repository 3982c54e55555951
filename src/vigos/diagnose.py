"""``vigos diagnose``: the shortcut diagnostics of a model on a dataset, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vigos.data.rows import Example
from vigos.diagnostics.measures import COUNTERFACTUALS, diagnose, student_image_sensitivity

if TYPE_CHECKING:
    from vigos.training.config import ViGOSConfig


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vigos diagnose`` options."""
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint directory, LoRA adapter directory (its teacher is the base model), hub id, or tiny:<arch>",
    )
    parser.add_argument(
        "--data", help="rows to diagnose: JSONL, parquet, saved dataset, hub id, or synthetic:<split>:<rows>"
    )
    parser.add_argument(
        "--agree-data",
        help="prior-agreeing rows for image sensitivity, paired row by row with "
        "--conflict-data (e.g. synthetic:eval_agree:64)",
    )
    parser.add_argument(
        "--conflict-data", help="prior-conflicting rows for image sensitivity (e.g. synthetic:eval_conflict:64)"
    )
    parser.add_argument("--config", help="YAML of ViGOSConfig options (prompts, sampling, teachers)")
    parser.add_argument(
        "--method", choices=("vigos", "opsd"), help="whose teachers to measure (default: the config's, vigos)"
    )
    parser.add_argument("--sample-size", type=int, default=16, help="rows (and pairs) to use (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument(
        "--counterfactual",
        choices=COUNTERFACTUALS[:2],
        default="blank",
        help="the image the teachers see instead: blank (grey) or shuffle (another row's)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, help="rollout length (default: the config's max_completion_length)"
    )
    parser.add_argument("--question-field", default="question")
    parser.add_argument("--image-field", default="image")
    parser.add_argument("--answer-field", default="answer")
    parser.add_argument("--out", help="write the results here as JSON")


def _load_model(name: str) -> tuple[torch.nn.Module, Any]:
    """The model (a LoRA adapter kept as an adapter, so that the fixed teacher is the base) and its processor."""
    from vigos.eval.engines import model_source
    from vigos.models.loading import load_model_and_processor

    source = model_source(name)
    model, processor = load_model_and_processor(source.base)
    if source.adapter is not None:
        from peft import PeftModel
        from transformers import AutoProcessor

        model = PeftModel.from_pretrained(model, source.adapter)
        if (Path(source.adapter) / "tokenizer_config.json").is_file():
            processor = AutoProcessor.from_pretrained(source.adapter)
    if torch.cuda.is_available():
        model = model.to("cuda")
    # Measured, not trained: a fixed or EMA teacher of a frozen model then needs no copy of its weights.
    return model.eval().requires_grad_(False), processor


def _load_rows(source: str, args: argparse.Namespace, config: ViGOSConfig) -> list[Example]:
    from vigos.data.examples import load_examples
    from vigos.training.recipe import resolve_dataset

    examples, report = load_examples(
        resolve_dataset(source, seed=args.seed),
        question_field=args.question_field,
        image_field=args.image_field,
        answer_field=args.answer_field,
        min_image_side=config.min_image_side,
        allow_image_paths_outside=config.allow_image_paths_outside,
    )
    if not examples:
        raise ValueError(f"no usable rows in {source!r}: {report.summary()}")
    return examples


def _table(metrics: dict[str, float]) -> str:
    width = max(len(name) for name in metrics)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    for name, value in metrics.items():
        shown = str(value) if isinstance(value, int) else f"{value:.4f}"
        lines.append(f"{name.ljust(width)}  {shown}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from vigos.rollout.hf import HFGenerateRollout, SamplingParams
    from vigos.training.config_file import load_config

    if not args.data and not (args.agree_data or args.conflict_data):
        raise ValueError("nothing to diagnose: give --data, or --agree-data with --conflict-data, or both")
    if bool(args.agree_data) != bool(args.conflict_data):
        raise ValueError("image sensitivity needs both --agree-data and --conflict-data (paired rows)")
    if args.sample_size < 1:
        raise ValueError(f"--sample-size must be at least 1; got {args.sample_size}")
    overrides = {"output_dir": "vigos_output", "report_to": "none"}
    if args.method:
        overrides["method"] = args.method
    if args.max_new_tokens:
        overrides["max_completion_length"] = str(args.max_new_tokens)
    config = load_config(args.config, overrides)
    model, processor = _load_model(args.model)
    metrics: dict[str, float] = {}
    if args.data:
        rollout = HFGenerateRollout(
            processor,
            SamplingParams(config.temperature, config.top_p, config.top_k, config.max_completion_length),
            config.student_spec,
        )
        scorer = config.build_scorer(processor, teacher=config.teacher_policy(model))
        metrics.update(
            diagnose(
                model,
                processor,
                _load_rows(args.data, args, config),
                scorer=scorer,
                rollout=rollout,
                sample_size=args.sample_size,
                seed=args.seed,
                counterfactual=args.counterfactual,
            )
        )
    if args.agree_data:
        agree = _load_rows(args.agree_data, args, config)[: args.sample_size]
        conflict = _load_rows(args.conflict_data, args, config)[: args.sample_size]
        greedy = HFGenerateRollout(
            processor,
            SamplingParams(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=config.max_completion_length),
            config.student_spec,
        )
        sensitivity = student_image_sensitivity(model, processor, agree, conflict, rollout=greedy, seed=args.seed)
        metrics.update({f"sensitivity_{k}": v for k, v in sensitivity.items()})
    return {
        "model": args.model,
        "data": args.data,
        "agree_data": args.agree_data,
        "conflict_data": args.conflict_data,
        "method": config.method,
        "sample_size": args.sample_size,
        "seed": args.seed,
        "counterfactual": args.counterfactual,
        "metrics": metrics,
    }


def diagnose_command(args: argparse.Namespace) -> int:
    """Run ``vigos diagnose`` from parsed arguments: print a table, write ``--out``. Returns the exit code."""
    try:
        result = _run(args)
    except ValueError as error:  # DataError, ConfigError and EvalError are ValueErrors with a message for the user
        print(f"vigos diagnose: {error}", file=sys.stderr)
        return 2
    print(_table(result["metrics"]))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"results: {out}")
    return 0
