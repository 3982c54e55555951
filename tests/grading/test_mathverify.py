"""Tests for vigos.grading.mathverify: math-verify's comparisons in a worker process, from threads and forked
processes, with a timeout that a hanging comparison cannot escape, and in process when no worker can start."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vigos.grading import mathverify
from vigos.grading.answers import is_correct

MATH_PAIRS = [
    (r"\frac{2}{4}", r"\frac{1}{2}", True),
    (r"\sqrt{9}", "3", True),
    ("x+1", "1+x", True),
    (r"\pi", "3.14", False),
    (r"2^{10}", "1024", True),
    (r"\frac{1}{3}", "0.33", False),
]


def test_math_grading_in_a_thread_pool() -> None:
    # math-verify's own timeouts use signal.alarm, which raises off the main thread.
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda pair: is_correct(pair[0], pair[1]), MATH_PAIRS * 2))
    assert verdicts == [expected for _, _, expected in MATH_PAIRS * 2]


def test_hanging_comparison_times_out_and_grading_recovers() -> None:
    # 10^(10^10) is computed inside C code, where no in-process timeout can stop it.
    start = time.monotonic()
    assert not is_correct(r"10^{10^{10}}", "1", math_timeout_s=1.0)
    assert time.monotonic() - start < 5
    assert is_correct(r"\sqrt{16}", "4")


def test_in_process_fallback_when_no_child_can_start(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = mathverify._MathVerifyWorker()
    monkeypatch.setattr(mathverify, "_WORKER", worker)
    monkeypatch.setattr(mathverify.sys, "executable", "/nonexistent/python")
    assert worker.compare("1", "1", 1.0) is None
    assert is_correct(r"2\sqrt{2}", r"\sqrt{8}")
    verdicts: list[bool] = []
    thread = threading.Thread(target=lambda: verdicts.append(is_correct(r"\frac{6}{8}", "0.75")))
    thread.start()
    thread.join()
    assert verdicts == [True]


def _grade_in_forked_child(pair: tuple[str, str]) -> bool:
    return is_correct(*pair)


def test_forked_process_grades_with_its_own_worker() -> None:
    assert is_correct(r"\sqrt{25}", "5")  # the parent's worker is running before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_grade_in_forked_child, [(r"\sqrt{36}", "6"), (r"\sqrt{2}", "2")]) == [True, False]
    assert is_correct(r"\sqrt{49}", "7")
