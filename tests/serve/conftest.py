"""The policy server that the tests of `vigos serve` send their requests to: the tiny model, once per module."""

from __future__ import annotations

import pytest

from vigos.models.loading import load_model_and_processor
from vigos.serve.server import PolicyServer, running


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    model, processor = load_model_and_processor(str(tiny_model_dir))
    return PolicyServer(model.eval(), processor, model_name="tiny", max_n=8)


@pytest.fixture(scope="module")
def url(policy):
    with running(policy) as base:
        yield base
