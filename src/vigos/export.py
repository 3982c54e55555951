"""``vigos export``: merge a trained LoRA adapter into its base model and write a standalone model.

The base is the one the adapter's ``adapter_config.json`` names
(``base_model_name_or_path``), or ``--base``. The output directory holds the
merged weights and the processor (the adapter directory's own when the
trainer saved one there, else the base's), so that inference engines and
``vigos eval`` load it as a plain model, with no PEFT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vigos.training.model_card import CARD, exported_card

ADAPTER_CONFIG = "adapter_config.json"
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportError(ValueError):
    """An export that cannot run as asked; the message says what to pass or fix."""


def adapter_base(adapter: Path) -> str:
    """The base model an adapter directory names in its ``adapter_config.json``."""
    config_path = adapter / ADAPTER_CONFIG
    if not adapter.is_dir():
        raise ExportError(
            f"--adapter {str(adapter)!r} is not a directory; name the output_dir of a LoRA run "
            "or one of its checkpoint-N directories"
        )
    if not config_path.is_file():
        raise ExportError(
            f"--adapter {str(adapter)!r} holds no {ADAPTER_CONFIG}, so it is not a LoRA adapter "
            "(a run with use_lora: false already saved a full model; use it as is)"
        )
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ExportError(f"{config_path} is not a valid adapter config ({error})") from None
    if not base:
        raise ExportError(f"{config_path} names no base_model_name_or_path; pass the base model with --base")
    return str(base)


def merge_adapter(adapter: str | Path, *, base: str | None = None, dtype: str = "auto") -> tuple[torch.nn.Module, Any]:
    """The base model with ``adapter`` merged into its weights (no PEFT wrapper left), and its processor."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vigos.models.loading import resolve_model_path

    adapter = Path(adapter)
    named = adapter_base(adapter)
    source = resolve_model_path(base or named)
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=DTYPES[dtype])
    except OSError as error:
        hint = "" if base else f" (named by {adapter / ADAPTER_CONFIG}); pass --base with a local copy of it"
        raise ExportError(f"could not load the base model {source!r}{hint}: {str(error).splitlines()[0]}") from None
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    # A trainer that saved its processor next to the adapter makes that copy the authority
    # (it may carry added tokens or a changed chat template).
    processor_dir = adapter if (adapter / "tokenizer_config.json").is_file() else source
    return merged, AutoProcessor.from_pretrained(processor_dir)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vigos export`` options to ``parser``."""
    parser.add_argument(
        "--adapter", required=True, help="LoRA adapter directory (a run's output_dir or a checkpoint-N)"
    )
    parser.add_argument("--out", required=True, help="directory to write the merged model and processor to")
    parser.add_argument("--base", help="base model directory or hub id (default: the one adapter_config.json names)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=list(DTYPES),
        help="dtype of the written weights (default: the base checkpoint's own)",
    )
    parser.add_argument("--force", action="store_true", help="write into --out even if it is not empty")


def export_command(args: argparse.Namespace) -> int:
    """Run ``vigos export`` from parsed arguments. Returns the exit code."""
    out = Path(args.out)
    try:
        if out.exists() and any(out.iterdir()) and not args.force:
            raise ExportError(f"--out {str(out)!r} is not empty; choose a new directory or pass --force")
        model, processor = merge_adapter(args.adapter, base=args.base, dtype=args.dtype)
    except ExportError as error:
        print(f"vigos export: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    base = args.base or adapter_base(Path(args.adapter))
    exported_card(Path(args.adapter), base).save(out / CARD)
    print(f"wrote the merged model, its processor and its model card to {out}")
    return 0
