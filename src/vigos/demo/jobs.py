"""How the demo runs its stages: one-line progress, pinned thread counts, independent runs side by side.

A run's numbers depend on the torch thread count (it changes the order of floating-point sums), not on
which process runs it or when: every job seeds itself. So the demo can spread its training and
evaluation runs over worker processes and still print what one process would.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

import torch


class Stage:
    """Prints a one-line summary of a stage and its duration."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> Stage:
        self.start = time.time()
        print(f"[demo] {self.name} ...", flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            print(f"[demo] {self.name}: done in {time.time() - self.start:.0f} s", flush=True)


@contextmanager
def pinned(threads: int) -> Iterator[None]:
    """The thread count changes the order of floating-point sums, and so the numbers: pin it (the report
    records it with the machine) and ask torch for deterministic kernels; both restored afterwards."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def run_jobs(
    stage: str, jobs: dict[str, Callable[[], Any]], finished: set[str], *, workers: int, threads: int
) -> dict[str, Any]:
    """Run independent ``jobs`` (title: picklable job) and return their results in ``jobs``' order.

    One after another in this process under ``threads`` threads when ``workers`` is 1, else in
    ``workers`` spawned processes of ``threads`` threads each. The ``finished`` ones only read their
    results back, here, without a progress line.
    """
    results = {title: jobs[title]() for title in jobs if title in finished}
    pending = {title: job for title, job in jobs.items() if title not in finished}
    if not pending:
        return results
    if workers == 1:
        with pinned(threads):
            for title, job in pending.items():
                with Stage(f"{stage} {title}"):
                    results[title] = job()
        return {title: results[title] for title in jobs}
    print(f"[demo] {stage}: {len(pending)} runs in {workers} processes of {threads} thread(s) ...", flush=True)
    started = time.time()
    # Spawned workers inherit the environment: their thread count, and no progress bars interleaving.
    environment = {"OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_pin_worker, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(_timed, job): title for title, job in pending.items()}
            for future in as_completed(futures):
                results[futures[future]], seconds = future.result()
                print(f"[demo] {stage} {futures[future]}: done in {seconds:.0f} s", flush=True)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    print(f"[demo] {stage}: done in {time.time() - started:.0f} s", flush=True)
    return {title: results[title] for title in jobs}


def _timed(job: Callable[[], Any]) -> tuple[Any, float]:
    start = time.time()
    return job(), time.time() - start


def _pin_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
