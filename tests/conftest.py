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


@pytest.fixture(scope="module")
def scoring_setup(tiny_model_dir):
    """(model, processor, examples) for scoring and rollouts, once per test module: the tiny Qwen2.5-VL model in
    float32 and eval mode with random (non-zero) LoRA weights on q, v and up projections, so that the student
    differs from the adapter-off teacher; and two examples, a red square (112x112) and a blue sky (84x112)."""
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vigos.data.rows import Example
    from vigos.training.recipe import language_lora_targets

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=language_lora_targets(["q_proj", "v_proj", "up_proj"]),
        init_lora_weights=False,
    )
    model = get_peft_model(model, lora)
    model.eval()
    red = Image.new("RGB", (112, 112), (200, 30, 30))
    blue = Image.new("RGB", (84, 112), (20, 40, 220))
    examples = [
        Example(question="What colour is the square?", answer="red", image=red, row=0, meta={}),
        Example(question="What colour is the sky?", answer="blue", image=blue, row=1, meta={}),
    ]
    return model, processor, examples


@pytest.fixture(scope="module")
def tiny_model_and_processor(tiny_model_dir):
    """The tiny Qwen2.5-VL model (eval mode) and its processor as `load_model_and_processor` loads them, once per
    test module."""
    from vigos.models.loading import load_model_and_processor

    model, processor = load_model_and_processor(str(tiny_model_dir))
    return model.eval(), processor


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """Tiny random checkpoints of the non-Qwen families (Gemma 3, LLaVA-OneVision, Idefics3), arch -> directory."""
    from vigos.models.tiny_families import FAMILY_ARCHS

    root = tmp_path_factory.mktemp("families")
    return {arch: make_tiny(arch, root / arch) for arch in FAMILY_ARCHS}
