"""`vigos eval` stopped midway, in a subprocess on the tiny model: killed, or interrupted with Ctrl-C, then re-run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vigos.eval.fixtures import write_fixture


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def eval_argv(model: Path, data: Path, out: Path, benchmarks: str) -> list[str]:
    """A small `vigos eval` on the tiny model: k = 2, 24 new tokens, one item per batch."""
    return [
        "--model",
        str(model),
        "--benchmarks",
        benchmarks,
        "--data-dir",
        str(data),
        "--out-dir",
        str(out),
        "--k",
        "2",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "1",
        "--engine",
        "hf",
        "--no-progress",
    ]


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _command(argv: list[str]) -> list[str]:
    from vigos import cli

    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    if "eval" in commands.choices:
        return [sys.executable, "-m", "vigos.cli", "eval", *argv]
    script = (
        "import argparse, sys; from vigos.eval.runner import add_eval_arguments, eval_command; "
        "p = argparse.ArgumentParser(); add_eval_arguments(p); "
        "sys.exit(eval_command(p.parse_args(sys.argv[1:])))"
    )
    return [sys.executable, "-c", script, *argv]


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_items(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_fixture("vilp-f", data, n=2)  # 6 items, one per batch: the kill lands mid-benchmark
    write_fixture("cvbench", data, n=2)
    out = tmp_path / "run"
    argv = eval_argv(tiny_model_dir, data, out, "vilp-f,cvbench")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    first = out / "responses" / "vilp-f.jsonl"

    log = tmp_path / "first-run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(_command(argv), env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if first.exists() and first.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        assert process.poll() is None, f"the run ended before it could be killed: {log.read_text()}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (out / "summary.json").exists()
    kept = first.read_bytes()
    kept = kept[: kept.rindex(b"\n") + 1]  # complete lines only: a torn one is redone
    done_before = [json.loads(line)["id"] for line in kept.splitlines()]
    assert 1 <= len(done_before) < 6

    finished = subprocess.run(_command(argv), env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert first.read_bytes().startswith(kept)  # finished items kept as they were, not redone
    for benchmark, count in (("vilp-f", 6), ("cvbench", 2)):
        ids = [r["id"] for r in lines_of(out / "responses" / f"{benchmark}.jsonl")]
        assert len(ids) == len(set(ids)) == count
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == {"vilp-f": 6, "cvbench": 2}
    assert summary["metrics"]["benchmarks"]["vilp-f"]["n"] == 6
    assert summary["vilp"]["vilp-f"]["score"]["n"] == 4 and summary["vilp"]["vilp-f"]["prior"]["n"] == 2


@pytest.mark.slow
def test_interrupted_run_says_where_the_results_are_and_how_to_resume(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_fixture("vilp-f", data, n=2)  # 6 items, one per batch: the interrupt lands mid-benchmark
    out = tmp_path / "run"
    argv = eval_argv(tiny_model_dir, data, out, "vilp-f")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    first = out / "responses" / "vilp-f.jsonl"
    process = subprocess.Popen(
        _command(argv),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job (`make test &`) starts with SIGINT ignored, and a child inherits that:
        # give the run the disposition a user's Ctrl-C meets.
        preexec_fn=_interruptible,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if first.exists() and first.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        assert process.poll() is None, f"the run ended before it could be interrupted: {process.stderr.read()}"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    said = [line for line in err.splitlines() if "resume" in line]
    assert len(said) == 1, err
    assert said[0].startswith(
        f"vigos eval: interrupted; the finished items are kept in {out}; to resume, run: vigos eval --model "
    )
    assert not (out / "summary.json").exists()

    # The command it names, run as it is, finishes the run.
    command = shlex.split(said[0].split("to resume, run: ", 1)[1])
    assert command[:2] == ["vigos", "eval"] and command[command.index("--out-dir") + 1] == str(out)
    finished = subprocess.run(_command(command[2:]), env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((out / "summary.json").read_text())["items"] == {"vilp-f": 6}
