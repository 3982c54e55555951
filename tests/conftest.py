"""Shared fixtures: tiny real-architecture checkpoints, built once per test session, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402

# pytest -n 2 runs two workers on two cores: one thread each keeps them from fighting.
torch.set_num_threads(1)

from vigos.tiny import make_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint (model + processor)."""
    return make_tiny("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
    """A tiny random Qwen3-VL checkpoint (model + processor)."""
    return make_tiny("qwen3_vl", tmp_path_factory.mktemp("tiny") / "qwen3_vl")
