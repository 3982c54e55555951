"""Rollouts from an in-process vLLM engine that shares the training GPU ("colocate").

Not run here: vLLM needs a CUDA GPU and is not installed on the development
machine. This is written from vLLM's documented Python API (``vllm.LLM``,
``SamplingParams``, ``LoRARequest``, ``LLM.collective_rpc``); the parts it
shares with the tested server client (the prompt, the sampling fields, the
prompt check, the token handling) come from :mod:`vigos.rollout.vllm_server`.

The engine loads the base checkpoint itself and takes
``gpu_memory_utilization`` of the GPU (the release: 0.45 for 3B). After every
sync the policy is pushed into it: with LoRA, the adapter is saved and the
next rollouts name it in a new ``LoRARequest`` (vLLM loads it then, evicting
the previous one); without LoRA, every weight is loaded into the engine's
model in place. One training process only: several processes would each
need their own engine wired to the launcher's process group, which this
does not do (use ``vllm_server`` there).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vigos.data.rows import Example
from vigos.models.modeling import end_token_ids, unwrap
from vigos.prompts import PromptSpec, render_prompt, student_spec
from vigos.rollout.hf import SamplingParams, student_contexts, vision_token_ids
from vigos.rollout.sampler import until_eos
from vigos.rollout.vllm_server import (
    RolloutEngineError,
    check_prompt,
    peft_model,
    request_seeds,
    sampling_fields,
    vllm_max_lora_rank,
)

VLLM_MISSING = (
    "rollout_engine 'vllm_colocate' needs vLLM: install the vllm extra (pip install 'vigos[vllm]') "
    "on a machine with a CUDA GPU, or use rollout_engine 'vllm_server' or 'hf'"
)


class VLLMColocateRollout:
    """Rollouts from ``vllm.LLM`` in this process (see the module docstring; untested here).

    ``model_path``: the base checkpoint the engine loads. ``lora_rank``: the
    training adapter's rank (None: no LoRA, full weights are pushed).
    ``sync_dir``: where adapters are saved for the engine to load.
    ``max_images_per_prompt``: the most images a row shows (vLLM reserves room for them).
    """

    def __init__(
        self,
        processor: Any,
        params: SamplingParams,
        prompt: PromptSpec | None = None,
        *,
        model_path: str,
        sync_dir: str | Path,
        gpu_memory_utilization: float = 0.45,
        lora_rank: int | None = None,
        seed: int = 0,
        max_images_per_prompt: int = 1,
    ):
        from accelerate import PartialState

        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise RolloutEngineError(VLLM_MISSING) from None
        if PartialState().num_processes > 1:
            raise RolloutEngineError(
                "rollout_engine 'vllm_colocate' runs in one training process (one GPU); "
                "with several, start a vLLM server and use rollout_engine 'vllm_server'"
            )
        # The engine core in this process: pushing full weights hands the live tensors to its model.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        options: dict[str, Any] = {
            "model": model_path,
            "gpu_memory_utilization": gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": max_images_per_prompt},
            "seed": seed,
        }
        if lora_rank is not None:
            options.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(lora_rank), max_loras=1)
        self._vllm = vllm
        self._lora_request = LoRARequest
        self.llm = vllm.LLM(**options)
        self.processor = processor
        self.params = params
        self.prompt = prompt or student_spec()
        self.sync_dir = Path(sync_dir)
        self.stop_ids = end_token_ids(processor.tokenizer)
        self.bad_words = processor.tokenizer.convert_ids_to_tokens(vision_token_ids(processor))
        self.lora: Any = None  # the LoRARequest of the current adapter, once synced
        self._syncs = 0

    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]:
        """``num_samples`` completions per example, grouped by example."""
        if not self._syncs:
            self.sync(model)  # a resumed run's policy is not the checkpoint the engine loaded
        prompts = student_contexts(self.processor, examples, self.prompt)
        inputs = [
            {
                "prompt": render_prompt(
                    self.processor, self.prompt.text(e.question), self.prompt.prefill, len(e.images)
                ),
                "multi_modal_data": {"image": e.image},
            }
            for e in examples
        ]
        sampling = [
            self._vllm.SamplingParams(
                **sampling_fields(self.params, seed=seed, stop_ids=self.stop_ids, bad_words=self.bad_words)
            )
            for seed in request_seeds(len(examples))
        ]
        outputs = self.llm.generate(inputs, sampling, lora_request=self.lora, use_tqdm=False)
        completions = []
        for context, output in zip(prompts, outputs):
            check_prompt(
                context.prompt_ids,
                output.prompt_token_ids,
                processor=self.processor,
                engine="the in-process vLLM engine",
            )
            completions.extend(until_eos(list(sample.token_ids), self.stop_ids) for sample in output.outputs)
        return completions

    def sync(self, model: torch.nn.Module) -> None:
        """Push ``model``'s current policy into the engine: its LoRA adapter, or all its weights."""
        self._syncs += 1
        peft = peft_model(model)
        if peft is None:
            weights = list(unwrap(model).state_dict().items())
            self.llm.collective_rpc(_load_weights, args=(weights,))
            return
        directory = (self.sync_dir / f"adapter-{self._syncs}").resolve()
        peft.save_pretrained(str(directory))
        # A new name and id: vLLM caches adapters by id, so reusing one would keep serving the old weights.
        self.lora = self._lora_request(f"vigos-policy-{self._syncs}", self._syncs, str(directory))
        shutil.rmtree(self.sync_dir / f"adapter-{self._syncs - 1}", ignore_errors=True)


def _load_weights(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs on the engine's worker (``collective_rpc`` passes it first): load Hugging Face-named weights in place."""
    worker.model_runner.model.load_weights(weights=weights)
