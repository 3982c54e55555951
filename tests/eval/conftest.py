"""Shared fixtures for the tests of vigos.eval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vigos.eval.benchmarks import BENCHMARKS
from vigos.eval.fixtures import write_fixture


@pytest.fixture
def registry():
    """BENCHMARKS as it was before the test (YAML tests register their own)."""
    saved = dict(BENCHMARKS)
    yield BENCHMARKS
    BENCHMARKS.clear()
    BENCHMARKS.update(saved)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from threads, and under pytest-xdist two workers' threads fight for the cores.

    Used by the modules that run the tiny model (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("benchmarks")
    write_fixture("vilp-f", root, n=1)  # one published row: three items (one agreeing, two conflicting)
    write_fixture("mathvista", root, n=2)
    write_fixture("cvbench", root, n=2)
    write_fixture("mmvet", root, n=2)
    return root
