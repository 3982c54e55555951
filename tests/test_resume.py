"""Kill and resume: a ``vigos train`` run killed with SIGKILL mid-training and resumed
from its last checkpoint trains on the same examples, step for step, as a run that
was never interrupted, and its logs go on from the checkpoint without a gap or a
repeat.

The examples of each step are read from ``completions.jsonl``, which logs every
rollout of every step here (``num_completions_to_log`` = batch x generations).
"""

from __future__ import annotations

import json
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
    return [sys.executable, "-m", "vigos.cli", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
            "--output_dir", str(out), "--max_steps", str(STEPS), "--save_steps", "1", "--logging_steps", "1",
            "--max_completion_length", "16", "--log_completions_steps", "1",
            "--num_completions_to_log", str(ROLLOUTS_PER_STEP), *extra]


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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "VIGOS_CACHE": str(tmp_path / "cache")}
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = subprocess.run(train_command(whole), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    run = subprocess.Popen(train_command(broken), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (broken / f"checkpoint-{KILL_AFTER}").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    assert (broken / f"checkpoint-{KILL_AFTER}").exists() and not (broken / f"checkpoint-{STEPS}").exists()

    resumed = subprocess.run(
        train_command(broken, "--resume_from_checkpoint", str(broken / f"checkpoint-{KILL_AFTER}")),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    expected, got = rollouts_by_step(whole), rollouts_by_step(broken)
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert all(len(rollouts) == ROLLOUTS_PER_STEP for rollouts in expected.values())
    # Every step trained on the same examples as the uninterrupted run: none used twice, none skipped.
    assert {s: sorted(r for r, _ in v) for s, v in got.items()} == {s: sorted(r for r, _ in v) for s, v in expected.items()}
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
