import math
from functools import partial

import pytest
import torch

from vigos.demo.jobs import pinned, run_jobs


def test_pinned_sets_and_restores_the_thread_count_and_determinism():
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with pinned(1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_pins_each_job_and_keeps_the_jobs_order(workers, capsys):
    jobs = {
        "factorial": partial(math.factorial, 5),
        "threads": torch.get_num_threads,
        "deterministic": torch.are_deterministic_algorithms_enabled,
    }
    results = run_jobs("stage", jobs, {"factorial"}, workers=workers, threads=1)
    assert list(results) == list(jobs)
    assert results == {"factorial": 120, "threads": 1, "deterministic": True}
    printed = capsys.readouterr().out
    # A finished job is only read back; the others each get a line.
    assert "stage factorial" not in printed
    assert "[demo] stage threads: done in" in printed and "[demo] stage deterministic: done in" in printed
    assert ("processes" in printed) == (workers > 1)


def test_run_jobs_with_every_job_finished_prints_nothing(capsys):
    assert run_jobs("stage", {"a": partial(math.factorial, 3)}, {"a"}, workers=2, threads=1) == {"a": 6}
    assert capsys.readouterr().out == ""
