"""Generation engines of the evaluation runner: the Hugging Face model, vLLM, and an OpenAI-compatible server.

An engine samples ``n`` completions per question with the student prompt
(image + question + format instruction, the assistant turn pre-filled with
``<description>``) and returns, per question, the ``n`` texts the model
"wrote": the pre-fill followed by the decoded completion, special tokens
dropped. No teacher and no reference answer are involved.

The model is a merged checkpoint (a directory, a hub id or ``tiny:<arch>``)
or a LoRA adapter directory: an ``adapter_config.json`` there names the base
model in ``base_model_name_or_path``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from vigos.data.rows import Example
from vigos.errors import ConfigError
from vigos.eval.run_folder import EvalError
from vigos.models.loading import load_model_and_processor, resolve_model_path
from vigos.prompts import PromptSpec, render_prompt
from vigos.rollout.hf import HFGenerateRollout, SamplingParams
from vigos.rollout.vllm_server import vllm_max_lora_rank

__all__ = [
    "ADAPTER_CONFIG",
    "ENGINES",
    "Engine",
    "HFEngine",
    "ServerEngine",
    "ModelSource",
    "VLLMEngine",
    "VLLM_MISSING",
    "batch_seed",
    "item_seed",
    "load_hf_model",
    "model_source",
    "resolve_engine",
    "vllm_available",
]

ADAPTER_CONFIG = "adapter_config.json"
ENGINES = ("auto", "hf", "vllm", "server")
VLLM_MISSING = "engine 'vllm' needs vLLM: install the vllm extra (pip install 'vigos[vllm]') on a machine with a GPU"


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a full model, plus a LoRA adapter directory or ``None``."""

    base: str
    adapter: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict for ``summary.json``."""
        return {"base": self.base, "adapter": self.adapter}


def model_source(model: str) -> ModelSource:
    """Resolve ``model``: ``tiny:<arch>`` is built, an adapter directory names its base model."""
    try:
        resolved = resolve_model_path(model)
    except ValueError as error:  # an unknown tiny:<arch> or size
        raise EvalError(f"model {model!r}: {error}") from None
    adapter_config = Path(resolved) / ADAPTER_CONFIG
    if not adapter_config.is_file():
        return ModelSource(resolved)
    try:
        base = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise EvalError(f"{adapter_config} is not a valid adapter config ({error})") from None
    if not base:
        raise EvalError(
            f"{adapter_config} names no base_model_name_or_path; set it to the base model's "
            "directory or hub id, or evaluate a merged model"
        )
    return ModelSource(resolve_model_path(str(base)), str(Path(resolved)))


def _adapter_has_processor(adapter: str) -> bool:
    # A trainer that saves its processing class next to the adapter makes the adapter
    # directory the authority on the tokenizer (added tokens, chat template).
    return (Path(adapter) / "tokenizer_config.json").is_file()


def _processor_of(source: ModelSource) -> Any:
    """The processor of ``source``: the adapter directory's when it has one, else the base model's."""
    from transformers import AutoProcessor

    use_adapter_processor = source.adapter is not None and _adapter_has_processor(source.adapter)
    return AutoProcessor.from_pretrained(source.adapter if use_adapter_processor else source.base)


def _written_texts(processor: Any, prompt: PromptSpec, completions: list[list[int]], n: int) -> list[list[str]]:
    """Completion token ids, ``n`` per example in order, as the texts the model wrote: pre-fill + decoded text."""
    texts = processor.tokenizer.batch_decode(completions, skip_special_tokens=True)
    return [[prompt.prefill + text for text in texts[i : i + n]] for i in range(0, len(texts), n)]


def load_hf_model(source: ModelSource) -> tuple[torch.nn.Module, Any]:
    """The model (adapter merged in, on the GPU when there is one, in eval mode) and its processor."""
    try:
        model, processor = load_model_and_processor(source.base)
    except ConfigError as error:
        raise EvalError(str(error)) from None
    if source.adapter is not None:
        from peft import PeftModel
        from transformers import AutoProcessor

        # Merged weights generate as fast as the base model; the sampled distribution is the same.
        model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
        if _adapter_has_processor(source.adapter):
            processor = AutoProcessor.from_pretrained(source.adapter)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, processor


def item_seed(seed: int, benchmark: str, item_id: str) -> int:
    """A 63-bit seed for one item, the same in every process and run (no salted ``hash()``)."""
    digest = hashlib.sha256(f"{seed}\0{benchmark}\0{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def batch_seed(seeds: Sequence[int]) -> int:
    """One seed for a batch, from its items' seeds in order."""
    digest = hashlib.sha256(",".join(str(s) for s in seeds).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Engine(Protocol):
    """Samples completions: for each example, ``num_samples`` texts, pre-fill included."""

    name: str

    def generate(self, examples: Sequence[Example], seeds: Sequence[int]) -> list[list[str]]: ...


class HFEngine:
    """Hugging Face ``generate`` on the model's device, one left-padded batch per call.

    Sampling is seeded once per call with :func:`batch_seed` of the items'
    seeds, so the same batch of items draws the same samples again on the
    same hardware and library versions; a different batch composition draws
    different (equally valid) samples. The caller's torch RNG state is
    restored afterwards.
    """

    name = "hf"

    def __init__(self, model: torch.nn.Module, processor: Any, params: SamplingParams, prompt: PromptSpec):
        self.model = model
        self.processor = processor
        self.prompt = prompt
        self.num_samples = params.num_samples
        self.rollout = HFGenerateRollout(processor, params, prompt)

    def generate(self, examples: Sequence[Example], seeds: Sequence[int]) -> list[list[str]]:
        """``num_samples`` texts per example, in order."""
        device = next(self.model.parameters()).device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed(seeds))
            completions = self.rollout(self.model, examples)
        return _written_texts(self.processor, self.prompt, completions, self.num_samples)


class ServerEngine:
    """Generation by a separately started OpenAI-compatible server: ``vllm serve`` on GPUs, or ``vigos serve``.

    The server holds the base model; an adapter is hot-loaded into it
    (``/v1/load_lora_adapter``, so the server must read the adapter's
    directory). Prompts, sampling settings and token handling are those of
    the training rollouts' server client; each item is one request with its
    own seed, so its samples do not depend on the batch it falls in.
    """

    name = "server"

    def __init__(self, source: ModelSource, params: SamplingParams, prompt: PromptSpec, url: str):
        from vigos.rollout.vllm_server import RolloutEngineError, VLLMServerRollout

        self.processor = _processor_of(source)
        self.prompt = prompt
        self.num_samples = params.num_samples
        try:
            self.client = VLLMServerRollout(self.processor, params, prompt, url=url, sync_dir=".")
            if source.adapter is not None:
                name = "vigos-eval-" + hashlib.sha256(str(Path(source.adapter).resolve()).encode()).hexdigest()[:12]
                self.client.unload_adapter(name, missing_ok=True)
                self.client.load_adapter(name, Path(source.adapter).resolve())
                self.client.adapter = name
            self.client.model_name()
        except RolloutEngineError as error:
            raise EvalError(str(error)) from None

    def generate(self, examples: Sequence[Example], seeds: Sequence[int]) -> list[list[str]]:
        """``num_samples`` texts per example, in order."""
        from vigos.rollout.vllm_server import RolloutEngineError

        try:
            completions = self.client.sample(examples, [seed % 2**31 for seed in seeds])
        except RolloutEngineError as error:
            raise EvalError(str(error)) from None
        return _written_texts(self.processor, self.prompt, completions, self.num_samples)


def vllm_available() -> bool:
    """Whether vLLM is importable and a CUDA GPU is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_engine(engine: str, *, model_given: bool) -> str:
    """``hf``, ``vllm`` or ``server`` for the requested ``engine`` (``auto``: vLLM when it can run)."""
    if engine == "server":
        if model_given:
            raise EvalError("engine 'server' samples from the server; do not pass a loaded model")
        return "server"
    if engine == "vllm":
        if model_given:
            raise EvalError("engine 'vllm' loads the model itself from --model; do not pass a loaded model")
        if importlib.util.find_spec("vllm") is None:
            raise EvalError(VLLM_MISSING)
        return "vllm"
    if engine == "auto":
        return "vllm" if not model_given and vllm_available() else "hf"
    return "hf"


def _vllm_lora_rank(adapter: str) -> int:
    return vllm_max_lora_rank(int(json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("r", 8)))


class VLLMEngine:
    """vLLM offline generation with the same prompt text and sampling settings as :class:`HFEngine`.

    The prompt is rendered through the processor's chat template with the
    ``<description>`` pre-fill and the image goes in as ``multi_modal_data``;
    a LoRA adapter is applied per request. Every item carries its own seed,
    so its samples do not depend on which other items share the call.
    """

    name = "vllm"

    def __init__(self, source: ModelSource, params: SamplingParams, prompt: PromptSpec, seed: int, max_images: int = 8):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise EvalError(VLLM_MISSING) from None

        self._vllm = vllm
        self.params = params
        self.prompt = prompt
        self.processor = _processor_of(source)
        options: dict[str, Any] = {"model": source.base, "seed": seed, "limit_mm_per_prompt": {"image": max_images}}
        self.lora = None
        if source.adapter is not None:
            options.update(enable_lora=True, max_lora_rank=_vllm_lora_rank(source.adapter))
            self.lora = LoRARequest("vigos-adapter", 1, source.adapter)
        self.llm = vllm.LLM(**options)

    def generate(self, examples: Sequence[Example], seeds: Sequence[int]) -> list[list[str]]:
        """``num_samples`` texts per example, in order."""
        prompts = [
            {
                "prompt": render_prompt(
                    self.processor, self.prompt.text(example.question), self.prompt.prefill, len(example.images)
                ),
                "multi_modal_data": {"image": example.image},
            }
            for example in examples
        ]
        sampling = [
            self._vllm.SamplingParams(
                n=self.params.num_samples,
                temperature=self.params.temperature,
                top_p=self.params.top_p,
                top_k=self.params.top_k or -1,
                max_tokens=self.params.max_new_tokens,
                seed=seed,
                skip_special_tokens=True,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        return [[self.prompt.prefill + sample.text for sample in output.outputs] for output in outputs]
