"""Trackers: a 2-step `vigos train` with report_to tensorboard, and one with wandb offline, each read back:
every number metrics.jsonl holds under the same name (the Trainer's train/ prefix), and the sampled
completions as text (TensorBoard) or a table (W&B)."""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import pytest

from vigos.cli import main
from vigos.training.config import ViGOSConfig
from vigos.training.trackers import COLUMNS, completions_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_completions_are_a_markdown_table_one_line_a_row():
    text = completions_markdown([{"step": 1, "completion": "a | b\nc", "valid": True}])
    header, rule, row = text.splitlines()
    assert header == "| " + " | ".join(COLUMNS) + " |"
    # One cell per column: the pipe inside the completion is escaped, its newline gone.
    assert len(re.split(r"(?<!\\)\|", row)) - 2 == len(COLUMNS) and "a \\| b c" in row


def _train(tmp_path: Path, *extra: str) -> tuple[Path, list[dict]]:
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, "--diagnostics_steps", "2", "--diagnostics_sample_size", "2", *extra]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, records


def _numbers(records: list[dict]) -> set[str]:
    return {key for record in records for key, value in record.items() if isinstance(value, (int, float))} - {
        "step",
        "epoch",
    }


@pytest.mark.slow
def test_tensorboard_gets_every_metric_and_the_completions(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out, records = _train(tmp_path, "--report_to", "tensorboard")
    (logs,) = (out / "runs").iterdir()  # the Trainer's default: output_dir/runs/<date>_<host>
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    names = _numbers(records)
    assert {"loss_perception", "valid_rate", "diag_grounding_states_true"} <= names
    missing = {name for name in names if f"train/{name}" not in scalars and name not in scalars}
    assert not missing, missing
    assert "completions/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("completions/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| step | row | question |" in text and "<description>" in text


@pytest.mark.slow
def test_wandb_offline_gets_every_metric_and_a_completions_table(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    import wandb

    _, records = _train(tmp_path, "--report_to", "wandb")
    wandb.finish()  # what the interpreter's exit does after `vigos train`
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    deadline = time.monotonic() + 60
    logged, ended = _wandb_keys(next(run.glob("run-*.wandb")))
    while not ended and time.monotonic() < deadline:
        time.sleep(0.5)
        logged, ended = _wandb_keys(next(run.glob("run-*.wandb")))
    assert ended, "the W&B run file never got its exit record"
    missing = {name for name in _numbers(records) if f"train/{name}" not in logged and name not in logged}
    assert not missing, missing
    tables = sorted((run / "files" / "media" / "table").glob("completions_*.table.json"))
    assert tables
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == list(COLUMNS) and table["data"]


def _wandb_keys(path: Path) -> tuple[set[str], bool]:
    """Every key a W&B run file logged (history and summary), and whether its exit record is there yet
    (the W&B service may still be writing it). The file is a LevelDB-style log of 32 KiB blocks after a
    7-byte header; each record is a checksum (4 bytes), a length (2), a type (1: whole, 2-4: first,
    middle, last piece) and a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    raw, block, position, pending, keys, ended = path.read_bytes(), 32768, 7, b"", set(), False
    while position + 7 <= len(raw):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        if position + 7 + length > len(raw):
            break  # a record still being written
        data, position = raw[position + 7 : position + 7 + length], position + 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        items = record.history.item if record.HasField("history") else record.summary.update
        keys |= {item.key or "/".join(item.nested_key) for item in items}
        ended |= record.HasField("exit")
    return keys, ended


def test_a_tracker_that_is_not_installed_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"report_to wandb needs the wandb package: pip install 'vigos\[trackers\]'"):
        ViGOSConfig(output_dir="unused", report_to="wandb")
