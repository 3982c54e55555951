"""The sampled completions for the experiment trackers in use (``report_to``): a table for Weights & Biases,
a Markdown table as text for TensorBoard. The numbers reach them through the Trainer's own integrations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("step", "row", "question", "reference", "completion", "valid", "reason", "answer")


def completions_markdown(records: Sequence[dict[str, Any]]) -> str:
    """``records`` (completions.jsonl's) as a Markdown table, cells on one line each."""

    def cell(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(record.get(column, "")) for column in COLUMNS) + " |" for record in records]
    return "\n".join(lines)


def log_completions(callbacks: Sequence[Any], records: Sequence[dict[str, Any]], step: int) -> None:
    """Send ``records`` to each tracker among ``callbacks`` (the Trainer's): W&B gets a ``completions`` table,
    TensorBoard a ``completions`` text at ``step``."""
    from transformers.integrations import TensorBoardCallback, WandbCallback

    for callback in callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
            callback.tb_writer.add_text("completions", completions_markdown(records), step)
            callback.tb_writer.flush()
        elif isinstance(callback, WandbCallback) and callback._wandb is not None and callback._wandb.run is not None:
            table = callback._wandb.Table(
                columns=list(COLUMNS), data=[[record.get(column) for column in COLUMNS] for record in records]
            )
            callback._wandb.log({"completions": table, "train/global_step": step})
