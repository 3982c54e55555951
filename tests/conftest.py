"""Shared fixtures: tiny real-architecture checkpoints, built once per test session, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402

# pytest -n 2 runs two workers on two cores: one thread each keeps them from fighting.
torch.set_num_threads(1)

from vigos.models.tiny import make_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint (model + processor)."""
    return make_tiny("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
    """A tiny random Qwen3-VL checkpoint (model + processor)."""
    return make_tiny("qwen3_vl", tmp_path_factory.mktemp("tiny") / "qwen3_vl")


@pytest.fixture(scope="session")
def qwen_vocab_root(tmp_path_factory):
    """The directory of this session's real-vocabulary tiny checkpoints, one subdirectory per arch."""
    return tmp_path_factory.mktemp("qwen_vocab")


@pytest.fixture(scope="session", params=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def qwen_vocab_model_dir(request, qwen_vocab_root):
    """A tiny random checkpoint on Qwen's real vocabulary (size micro), once per family; the directory is named
    after the arch.

    Built on first use and kept for the session (a few seconds each); needs quicktok-v1, a dev dependency.
    """
    return make_tiny(request.param, qwen_vocab_root / request.param, vocab="qwen")


@pytest.fixture(scope="session")
def qwen_vocab_dirs(qwen_vocab_root):
    """The real-vocabulary tiny checkpoints of all three families, arch -> directory (the same ones as above)."""
    return {
        arch: make_tiny(arch, qwen_vocab_root / arch, vocab="qwen") for arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    }
