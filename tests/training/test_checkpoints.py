"""Atomic checkpoints: a process killed (SIGKILL) in the middle of a save leaves no
``checkpoint-N`` that looks complete, and a resume goes on from the last whole one.

The trainer here is ``transformers.Trainer`` on a two-weight regression, so that
the checkpoint machinery is tested on its own and fast; the ViGOS end-to-end
kill-and-resume test is in tests/test_resume.py. This file is also the worker script:
``python tests/training/test_checkpoints.py OUT {atomic,plain} KILL_AT {fresh,resume}``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Trainer, TrainingArguments

from vigos.training.checkpoints import (
    STAGING_PREFIX,
    AtomicCheckpointMixin,
    DiskFullError,
    checkpoint_step,
    publish_checkpoint,
    reporting_full_disk,
    rewind_jsonl,
)


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x, y):
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)}


class AtomicTrainer(AtomicCheckpointMixin, Trainer):
    pass


def regression_trainer(trainer_class: type, out: Path, **options) -> Trainer:
    torch.manual_seed(0)
    data = [{"x": torch.randn(2), "y": torch.randn(())} for _ in range(12)]
    args = TrainingArguments(
        output_dir=str(out),
        save_steps=1,
        per_device_train_batch_size=2,
        learning_rate=0.1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        **options,
    )
    return trainer_class(model=Regression(), args=args, train_dataset=data)


def run_worker(out: Path, mode: str, kill_at: int, start: str, max_file_bytes: int = 0) -> None:
    """Train 3 steps, saving after each; with ``kill_at`` > 0, SIGKILL itself in the middle of that step's save.

    With ``max_file_bytes``, no file may grow past that size: a write beyond it fails with EFBIG, as a full
    disk fails one with ENOSPC (the RNG state, ~14 kB, is then the first file of a checkpoint that cannot be
    written whole)."""
    base = AtomicTrainer if mode == "atomic" else Trainer
    if max_file_bytes:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    class KilledDuringSave(base):
        def _save_rng_state(self, output_dir):
            # The weights, optimizer and scheduler of this checkpoint are on disk by now.
            if self.state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            super()._save_rng_state(output_dir)

    trainer = regression_trainer(KilledDuringSave, out, max_steps=3)
    trainer.train(resume_from_checkpoint=True if start == "resume" else None)


def worker(
    out: Path, mode: str, kill_at: int, start: str = "fresh", max_file_bytes: int = 0
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, __file__, str(out), mode, str(kill_at), start, str(max_file_bytes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def complete(checkpoint: Path) -> bool:
    return all(
        (checkpoint / name).is_file()
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
    )


@pytest.mark.slow
def test_a_kill_during_a_save_leaves_no_checkpoint_that_looks_complete(tmp_path):
    killed = worker(tmp_path, "atomic", kill_at=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert complete(tmp_path / "checkpoint-1")
    assert not (tmp_path / "checkpoint-2").exists()
    assert (
        tmp_path / f"{STAGING_PREFIX}checkpoint-2"
    ).is_dir()  # the half-written save, under a name nothing resumes from

    resumed = worker(tmp_path, "atomic", kill_at=0, start="resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all(complete(tmp_path / f"checkpoint-{step}") for step in (1, 2, 3))
    assert checkpoint_step(tmp_path / "checkpoint-3") == 3
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    history = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]


@pytest.mark.slow
def test_without_the_mixin_the_same_kill_leaves_a_broken_checkpoint(tmp_path):
    """The control: plain ``Trainer`` saves in place, which is what the mixin prevents."""
    killed = worker(tmp_path, "plain", kill_at=2)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "checkpoint-2").is_dir() and not complete(tmp_path / "checkpoint-2")


@pytest.mark.slow
def test_a_save_the_disk_has_no_room_for_says_so_and_leaves_no_staging_dir(tmp_path):
    failed = worker(tmp_path, "atomic", kill_at=0, max_file_bytes=8192)
    assert failed.returncode == 1, failed.stderr[-3000:]
    [message] = [
        line for line in failed.stderr.splitlines() if line.startswith("vigos.training.checkpoints.DiskFullError: ")
    ]
    assert message.startswith(
        f"vigos.training.checkpoints.DiskFullError: could not write checkpoint-1: the disk is full at {tmp_path} ("
    )
    assert " MB free; " in message and "resume_from_checkpoint: true" in message
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert not (tmp_path / "checkpoint-1").exists()


def test_staging_dirs_left_by_an_earlier_run_are_removed_when_training_starts(tmp_path, caplog):
    (tmp_path / f"{STAGING_PREFIX}checkpoint-7" / "checkpoint-7").mkdir(parents=True)
    (tmp_path / f"{STAGING_PREFIX}checkpoint-7" / "checkpoint-7" / "optimizer.pt").write_bytes(b"cut short")
    (tmp_path / f"{STAGING_PREFIX}replaced-checkpoint-2").mkdir()
    caplog.set_level(logging.INFO, logger="vigos.training.checkpoints")
    regression_trainer(AtomicTrainer, tmp_path, max_steps=1, save_strategy="no").train()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert f"removed {STAGING_PREFIX}checkpoint-7, {STAGING_PREFIX}replaced-checkpoint-2 from {tmp_path}" in caplog.text


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EFBIG, "File too large"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8384 vs 8278"),
        RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
        Exception(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        ),
    ],
)
def test_errors_that_mean_no_room_become_disk_full_errors(tmp_path, error):
    expected = re.escape(f"could not write checkpoint-3: the disk is full at {tmp_path} (") + "[0-9]+ MB free; "
    with pytest.raises(DiskFullError, match=expected) as raised, reporting_full_disk(tmp_path, "checkpoint-3"):
        raise error
    assert raised.value.__cause__ is error


def test_other_write_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(PermissionError), reporting_full_disk(tmp_path, "checkpoint-3"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_old_checkpoints_are_still_rotated(tmp_path):
    regression_trainer(AtomicTrainer, tmp_path, max_steps=4, save_total_limit=2).train()
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == ["checkpoint-3", "checkpoint-4"]
    assert complete(tmp_path / "checkpoint-4")


def test_publishing_replaces_a_checkpoint_of_the_same_step(tmp_path):
    old, new = tmp_path / "checkpoint-4", tmp_path / "staged"
    old.mkdir()
    (old / "trainer_state.json").write_text('{"global_step": 4, "note": "old"}')
    new.mkdir()
    (new / "trainer_state.json").write_text('{"global_step": 4, "note": "new"}')
    publish_checkpoint(str(new), str(old))
    assert json.loads((old / "trainer_state.json").read_text())["note"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_checkpoint_step_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        checkpoint_step(tmp_path / "checkpoint-9")
    (tmp_path / "checkpoint-9").mkdir()
    with pytest.raises(FileNotFoundError, match="no trainer_state.json"):
        checkpoint_step(tmp_path / "checkpoint-9")
    (tmp_path / "checkpoint-9" / "trainer_state.json").write_text('{"global_step": 9}')
    assert checkpoint_step(tmp_path / "checkpoint-9") == 9


@given(
    steps=st.lists(st.integers(min_value=0, max_value=20), max_size=30),
    keep=st.integers(min_value=0, max_value=20),
    cut=st.integers(min_value=1, max_value=15),
)
def test_rewind_keeps_the_records_up_to_the_step_and_drops_a_cut_line(tmp_path_factory, steps, keep, cut):
    path = tmp_path_factory.mktemp("logs") / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 0.5}) for s in steps]
    # A kill in the middle of a write leaves the last line cut short.
    path.write_text("".join(line + "\n" for line in lines) + json.dumps({"step": 0, "loss": 1.0})[:cut])
    rewind_jsonl(path, keep)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [s for s in steps if s <= keep]


def test_rewind_of_a_missing_log_is_a_no_op(tmp_path):
    rewind_jsonl(tmp_path / "metrics.jsonl", 3)
    assert not (tmp_path / "metrics.jsonl").exists()


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
