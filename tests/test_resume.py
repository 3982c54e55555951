"""Kill and resume: a ``vigos train`` run killed with SIGKILL mid-training and resumed
from its last checkpoint trains on the same examples, step for step, as a run that
was never interrupted, and its logs go on from the checkpoint without a gap or a
repeat. A run whose disk fills says so, and a run started after a cut-short save
removes what that save left.

The examples of each step are read from ``completions.jsonl``, which logs every
rollout of every step here (``num_completions_to_log`` = batch x generations).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS, KILL_AFTER, ROLLOUTS_PER_STEP = 6, 3, 4  # tiny.yaml: 2 prompts x 2 generations per step


def train_command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vigos.cli",
        "train",
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--output_dir",
        str(out),
        "--max_steps",
        str(STEPS),
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
        "--max_completion_length",
        "16",
        "--log_completions_steps",
        "1",
        "--num_completions_to_log",
        str(ROLLOUTS_PER_STEP),
        *extra,
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rollouts_by_step(out: Path) -> dict[int, list[tuple[int, str]]]:
    steps: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for record in read_jsonl(out / "completions.jsonl"):
        steps[record["step"]].append((record["row"], record["completion"]))
    return dict(steps)


def training_logs(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.slow
def test_a_killed_run_resumes_without_repeating_or_skipping_examples(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "VIGOS_CACHE": str(tmp_path / "cache"),
    }
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = subprocess.run(train_command(whole), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    run = subprocess.Popen(
        train_command(broken), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (broken / f"checkpoint-{KILL_AFTER}").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    assert (broken / f"checkpoint-{KILL_AFTER}").exists() and not (broken / f"checkpoint-{STEPS}").exists()

    resumed = subprocess.run(
        train_command(broken, "--resume_from_checkpoint", str(broken / f"checkpoint-{KILL_AFTER}")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    expected, got = rollouts_by_step(whole), rollouts_by_step(broken)
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert all(len(rollouts) == ROLLOUTS_PER_STEP for rollouts in expected.values())
    # Every step trained on the same examples as the uninterrupted run: none used twice, none skipped.
    assert {s: sorted(r for r, _ in v) for s, v in got.items()} == {
        s: sorted(r for r, _ in v) for s, v in expected.items()
    }
    rows = [row for rollouts in got.values() for row in {r for r, _ in rollouts}]
    assert len(rows) == len(set(rows)) == STEPS * ROLLOUTS_PER_STEP // 2
    # Same optimizer, scheduler and RNG after the resume: the very same rollouts and losses.
    assert got == expected
    logs, expected_logs = training_logs(broken), training_logs(whole)
    assert [r["step"] for r in logs] == list(range(1, STEPS + 1))
    for mine, theirs in zip(logs, expected_logs):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-9), mine["step"]
        assert mine["learning_rate"] == pytest.approx(theirs["learning_rate"])
    state = json.loads((broken / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, STEPS + 1))


# Run `vigos train` with no file allowed past a size: writing one fails with EFBIG, as a full disk fails it with
# ENOSPC. The limit is set after the imports, so that only the run's own writes meet it.
LIMITED_TRAIN = """
import resource, signal, sys
from vigos.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_run_out_of_disk_says_so_in_one_line_and_leaves_no_staging_dir(tmp_path, monkeypatch):
    from vigos.models.loading import resolve_model_path
    from vigos.training.recipe import resolve_dataset

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    resolve_model_path("tiny:qwen2_5_vl")  # the model and data caches are written before the limit
    resolve_dataset("synthetic:train:32")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    # 32 kB: the step's logs fit, the checkpoint's adapter weights (~90 kB) do not.
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_TRAIN, str(32 * 1024), *train_command(out)[3:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("vigos train: ") == 1, done.stderr[-4000:]
    message = done.stderr[done.stderr.index("vigos train: ") :].splitlines()[0]  # after the progress bar's last \r
    assert message.startswith(f"vigos train: could not write checkpoint-1: the disk is full at {out} ("), message
    assert " MB free; " in message and "resume_from_checkpoint: true" in message
    assert not [p.name for p in out.iterdir() if p.name.startswith(".staging-")]
    assert not (out / "checkpoint-1").exists()


@pytest.mark.slow
def test_a_new_run_removes_the_staging_dir_a_cut_short_save_left(tmp_path, monkeypatch, caplog):
    from vigos.cli import main

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    leftover = out / ".staging-checkpoint-3" / "checkpoint-3"
    leftover.mkdir(parents=True)
    (leftover / "adapter_model.safetensors").write_bytes(b"cut short")
    caplog.set_level(logging.INFO, logger="vigos.training.checkpoints")
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO / "configs" / "tiny.yaml"),
                "--output_dir",
                str(out),
                "--max_steps",
                "1",
                "--save_strategy",
                "no",
            ]
        )
        == 0
    )
    assert not (out / ".staging-checkpoint-3").exists()
    assert f"removed .staging-checkpoint-3 from {out}: unfinished checkpoint saves of an earlier run" in caplog.text
    assert (out / "adapter_model.safetensors").exists()
