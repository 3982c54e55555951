"""Rollouts from vLLM: the client of a separately started OpenAI-compatible server.

:class:`VLLMServerRollout` samples the student's completions from a ``vllm
serve`` process (or any server speaking the same subset of the OpenAI API,
such as ``vigos serve``) and returns them as :class:`vigos.rollout.hf.HFGenerateRollout`
does: per example, ``num_samples`` lists of token ids after the
``<description>`` pre-fill, up to and including the end-of-sequence token.
It is the same rollout because of four things:

* **the prompt**: one user turn (the image as a base64 PNG data URL, then the
  student text) and the pre-fill as a final assistant message continued with
  ``continue_final_message`` (``add_generation_prompt`` off), which the chat
  template renders to the string :func:`vigos.prompts.render_prompt` builds.
  The server echoes the prompt's token ids; they are checked against the
  trainer's own student prompt, and a difference is an error: the loss
  would score tokens sampled from another prompt;
* **the sampling**: :class:`SamplingParams` mapped one to one (temperature,
  top_p, top_k, max_tokens, min_tokens, n), the checkpoint's own generation
  defaults (Qwen ships a repetition penalty) overridden, the same
  end-of-sequence ids as stop tokens, and the vision placeholder tokens
  forbidden as ``bad_words`` (vLLM masks a one-token bad word to -inf, as
  ``suppress_tokens`` does on the Hugging Face path);
* **the tokens**: the completion comes back as token ids
  (``return_token_ids``, vLLM >= 0.10.2), never re-tokenized from text;
* **the policy**: with LoRA, :meth:`VLLMServerRollout.sync` saves the current
  adapter and hot-loads it under a new name (``/v1/load_lora_adapter``; the
  server needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and ``--enable-lora``),
  and later requests name it. The trainer syncs after every optimizer step
  (``vllm_sync_steps``); the first rollout syncs too, so a resumed run samples
  from its restored adapter.

Each example is one request for its ``n`` samples, with a seed drawn from
torch's RNG, so a seeded run sends the same seeds (vLLM gives the samples
seeds ``seed, seed + 1, ...``). Only the Python standard library is used, through
:mod:`vigos.http_client`: no redirects, a deadline per request, a cap on an answer's size.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import shutil
import time
import urllib.error
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch

from vigos.data.rows import Example
from vigos.http_client import Answer, DeadlineExceeded, RedirectRefused, ResponseTooLarge, redact_url
from vigos.http_client import request as http_request
from vigos.models.modeling import end_token_ids, image_token_id
from vigos.prompts import PromptSpec, chat_messages, render_prompt, student_spec
from vigos.rollout.hf import SamplingParams, student_contexts, vision_token_ids
from vigos.rollout.sampler import until_eos

logger = logging.getLogger(__name__)

# vLLM accepts only these LoRA ranks as max_lora_rank (older releases stop at 64 or 256).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)
START_SERVER = (
    "Start one with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve MODEL --enable-lora --max-lora-rank R` "
    "(on a CPU: `vigos serve --model MODEL`), or point vllm_server_url at the one running."
)
# An answer is read up to a base (the envelope, the echoed prompt ids of large images) plus this much per
# sampled token: its id and its text, JSON-escaped, with room to spare.
RESPONSE_BASE_BYTES = 16 * 2**20
RESPONSE_BYTES_PER_TOKEN = 128


class RolloutEngineError(RuntimeError):
    """A vLLM rollout failed: the message names the engine (URL) and what to do."""


class PolicySync(Protocol):
    """A rollout engine that holds its own copy of the policy, pushed to it by :meth:`sync`."""

    def sync(self, model: torch.nn.Module) -> None: ...


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits an adapter of LoRA rank ``rank``."""
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= rank), VLLM_LORA_RANKS[-1])


def sampling_fields(
    params: SamplingParams, *, seed: int, stop_ids: Sequence[int], bad_words: Sequence[str]
) -> dict[str, Any]:
    """vLLM's sampling options for ``params``: the same names in a request's body and in ``vllm.SamplingParams``."""
    return {
        "n": params.num_samples,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k or -1,  # -1: no top-k, in every vLLM release (newer ones also take 0)
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,
        "seed": seed,
        "stop_token_ids": list(stop_ids),
        "bad_words": list(bad_words),
        # Overrides the checkpoint's generation_config defaults that vLLM would otherwise apply.
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_p": 0.0,
    }


def request_seeds(count: int) -> list[int]:
    """One sampling seed per request, drawn from torch's RNG."""
    return torch.randint(0, 2**31 - 1, (count,)).tolist()


def check_prompt(expected: Sequence[int], served: Sequence[int] | None, *, processor: Any, engine: str) -> None:
    """Raise if the engine's prompt is not the trainer's student prompt.

    Runs of the image placeholder count as one token: engines differ in
    whether they echo the prompt before or after expanding it.
    """
    if served is None:
        return
    image = image_token_id(processor)
    ours, theirs = _collapse(expected, image), _collapse(served, image)
    if ours == theirs:
        return
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    decode = processor.tokenizer.decode
    raise RolloutEngineError(
        f"{engine} built a different student prompt from the trainer's (first difference at token {at}: "
        f"trainer {decode(ours[at : at + 8])!r}, engine {decode(theirs[at : at + 8])!r}). The loss would score "
        "completions sampled from another prompt. Serve the same checkpoint, with its own processor and chat "
        "template (no --chat-template override)."
    )


def _collapse(ids: Sequence[int], token: int) -> list[int]:
    return [t for i, t in enumerate(ids) if t != token or i == 0 or ids[i - 1] != token]


def peft_model(model: torch.nn.Module) -> Any | None:
    """The PEFT model under DDP/compile wrappers, or None when ``model`` has no adapter."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    return inner if hasattr(inner, "peft_config") else None


def image_data_url(image: Any) -> str:
    """The image as a ``data:image/png;base64,...`` URL (PNG: lossless, so the server sees the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_request(model: str, user_text: str, prefill: str, image: Any, sampling: dict[str, Any]) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body of one student prompt: the image (or a list of a row's images, in
    order) + text, then the assistant pre-fill."""
    images = image if isinstance(image, (list, tuple)) else [image]
    user = {
        "role": "user",
        "content": [
            *({"type": "image_url", "image_url": {"url": image_data_url(one)}} for one in images),
            {"type": "text", "text": user_text},
        ],
    }
    messages: list[dict[str, Any]] = [user]
    if prefill:
        messages.append({"role": "assistant", "content": prefill})
    return {
        "model": model,
        "messages": messages,
        "add_generation_prompt": not prefill,
        "continue_final_message": bool(prefill),
        "return_token_ids": True,
        **sampling,
    }


def check_continued_prefill(processor: Any, prefill: str) -> None:
    """Raise unless the chat template renders ``prefill``, sent as a final assistant message to continue, as the
    trainer renders the student prompt (the generation prompt, then the pre-fill). Some templates open an
    assistant turn with other whitespace than their generation prompt (LLaVA-OneVision's ``assistant \\n``,
    SmolVLM's ``Assistant: ``): a chat server would then sample after another prompt."""
    if not prefill:
        return
    messages = [*chat_messages("?"), {"role": "assistant", "content": prefill}]
    continued = processor.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    ours = render_prompt(processor, "?", prefill)
    if continued != ours:
        raise RolloutEngineError(
            f"a chat server cannot sample this model's student prompt: its chat template continues the assistant "
            f"pre-fill as {continued[-40:]!r}, the trainer's prompt ends {ours[-40:]!r}, so every rollout would "
            "follow another prompt. Use rollout_engine: hf (or vllm_colocate, which sends the rendered prompt)."
        )


class ServerRefused(RolloutEngineError):
    """The server answered a request with HTTP 4xx."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def server_api_key() -> str | None:
    """The key sent to the server as ``Authorization: Bearer``: ``$VLLM_API_KEY`` (what ``vllm serve
    --api-key`` reads), else ``$VIGOS_SERVE_API_KEY`` (``vigos serve``'s). Read from the environment only,
    so it never lands in a config file, the saved training arguments or a log."""
    return os.environ.get("VLLM_API_KEY") or os.environ.get("VIGOS_SERVE_API_KEY") or None


class ServerClient:
    """JSON over HTTP to one OpenAI-compatible server, with a deadline per request and retries with back-off.

    ``timeout`` is the deadline of one request as a whole (connect, send and
    the whole answer); an answer over ``max_response_bytes`` is refused, and
    a redirect is never followed (it would send the request somewhere the
    caller did not name). Connection failures, HTTP 5xx and 429 are retried
    ``retries`` times, waiting ``backoff`` seconds, then twice that, and so
    on. A timeout is not retried (the server is likely still working on the
    request); a 4xx is a request the server refuses, so it is not retried either.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 600.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_response_bytes: int = RESPONSE_BASE_BYTES,
        api_key: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_response_bytes = max_response_bytes

    def get(self, path: str) -> Any:
        """GET ``path``; the parsed JSON answer."""
        return self._send("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path``; the parsed JSON answer, or the text of a plain-text one."""
        return self._send("POST", path, json.dumps(body).encode())

    def _send(self, method: str, path: str, data: bytes | None) -> Any:
        where = f"{method} {redact_url(self.url + path)}"
        for attempt in range(self.retries + 1):
            reached = True
            try:
                answer = http_request(
                    self.url + path,
                    method=method,
                    data=data,
                    headers=self.headers,
                    deadline_s=self.timeout,
                    max_bytes=self.max_response_bytes,
                )
            except RedirectRefused as error:
                raise RolloutEngineError(
                    f"{where}: the server answered HTTP {error.status}, a redirect to {error.location}, which is "
                    "not followed. If that is the vLLM server, set vllm_server_url (--server-url) to it."
                ) from None
            except ResponseTooLarge:
                raise RolloutEngineError(
                    f"{where}: the answer is larger than the {self.max_response_bytes / 2**20:.1f} MiB this client "
                    "reads (sized for the request's n x max_tokens token ids), so it was not read further. Check "
                    f"that {redact_url(self.url)} is a vLLM server."
                ) from None
            except DeadlineExceeded:
                raise self._timeout(where) from None
            except urllib.error.URLError as error:
                reached, failure = False, f"cannot connect: {error.reason}"
            except (ConnectionError, http.client.HTTPException) as error:  # dropped mid-answer
                failure = f"connection lost: {error!r}"
            else:
                if 200 <= answer.status < 300:
                    return _parse(answer.body)
                message = _error_message(answer)
                if answer.status < 500 and answer.status != 429:
                    raise ServerRefused(
                        answer.status,
                        f"the vLLM server refused {where}: HTTP {answer.status}: {message}{_hint(path, message)}",
                    )
                failure = f"HTTP {answer.status}: {message}"
            if attempt < self.retries:
                wait = self.backoff * 2**attempt
                logger.warning("%s failed (%s); retrying in %.1f s", where, failure, wait)
                time.sleep(wait)
        raise RolloutEngineError(
            f"{where} failed {self.retries + 1} times; last: {failure}."
            + (
                " Check the server's log."
                if reached
                else f" No vLLM server answers at {redact_url(self.url)}. {START_SERVER}"
            )
        )

    def _timeout(self, where: str) -> RolloutEngineError:
        return RolloutEngineError(
            f"{where} got no complete answer within {self.timeout:g} s, the deadline of one request. Raise "
            "vllm_request_timeout for long generations, or check that the server is not stuck or overloaded."
        )


def response_cap(params: SamplingParams) -> int:
    """The most bytes a chat-completions answer for ``params`` is read to: a base for the envelope and the
    echoed prompt ids, plus room for ``num_samples x max_new_tokens`` sampled ids and their text."""
    return RESPONSE_BASE_BYTES + params.num_samples * params.max_new_tokens * RESPONSE_BYTES_PER_TOKEN


def _parse(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # vLLM answers the LoRA endpoints in plain text


def _error_message(answer: Answer) -> str:
    parsed = _parse(answer.body)
    if isinstance(parsed, dict):
        # {"error": {"message": ...}}, vLLM's older flat {"message": ...}, or FastAPI's {"detail": ...}
        inner = parsed.get("error", parsed)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if "detail" in parsed:
            return str(parsed["detail"])
    return str(parsed)[:500]


def _hint(path: str, message: str) -> str:
    # "Not Found" is vLLM's (FastAPI's) answer to a route it does not have.
    if "lora_adapter" in path and message == "Not Found":
        return (
            " The server has no runtime LoRA endpoints: start vllm serve with --enable-lora and the "
            "environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
        )
    return ""


class VLLMServerRollout:
    """Rollouts from a separately started OpenAI-compatible vLLM server (see the module docstring).

    ``url``: the server's base URL (``http://host:port``). ``sync_dir``: where
    adapters are saved for the server to load; the server reads them from
    this path, so it must see the same file system. ``served_model``: the
    base model's name on the server (default: asked from ``/v1/models``).
    ``timeout``: the deadline of one request (see :class:`ServerClient`);
    answers are read up to :func:`response_cap` of ``params``.
    """

    def __init__(
        self,
        processor: Any,
        params: SamplingParams,
        prompt: PromptSpec | None = None,
        *,
        url: str,
        sync_dir: str | Path,
        served_model: str | None = None,
        timeout: float = 600.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_concurrency: int = 8,
        adapter_prefix: str = "vigos-policy",
    ):
        self.processor = processor
        self.params = params
        self.prompt = prompt or student_spec()
        self.client = ServerClient(
            url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_response_bytes=response_cap(params),
            api_key=server_api_key(),
        )
        self.sync_dir = Path(sync_dir)
        self.served_model = served_model
        self.max_concurrency = max_concurrency
        self.adapter_prefix = adapter_prefix
        self.adapter: str | None = None  # the adapter the server samples from, once synced
        self.stop_ids = end_token_ids(processor.tokenizer)
        self.bad_words = processor.tokenizer.convert_ids_to_tokens(vision_token_ids(processor))
        self._syncs = 0
        check_continued_prefill(processor, self.prompt.prefill)

    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]:
        """``num_samples`` completions per example, grouped by example (``model`` is read only to sync)."""
        if self.adapter is None and peft_model(model) is not None:
            self.sync(model)
        return self.sample(examples, request_seeds(len(examples)))

    def sample(self, examples: Sequence[Example], seeds: Sequence[int]) -> list[list[int]]:
        """``num_samples`` completions per example from the policy the server holds now, one request per
        example sampled with its seed (``0 <= seed < 2**31``)."""
        name = self.model_name()
        prompts = student_contexts(self.processor, examples, self.prompt)
        bodies = [
            chat_request(
                name,
                self.prompt.text(example.question),
                self.prompt.prefill,
                example.image,
                sampling_fields(self.params, seed=seed, stop_ids=self.stop_ids, bad_words=self.bad_words),
            )
            for example, seed in zip(examples, seeds, strict=True)
        ]
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(bodies)))) as pool:
            responses = list(pool.map(lambda body: self.client.post("/v1/chat/completions", body), bodies))
        completions = []
        for context, response in zip(prompts, responses):
            check_prompt(
                context.prompt_ids,
                response.get("prompt_token_ids"),
                processor=self.processor,
                engine=f"the vLLM server at {self.client.url}",
            )
            choices = sorted(response["choices"], key=lambda choice: choice["index"])
            if len(choices) != self.params.num_samples:
                raise RolloutEngineError(
                    f"the vLLM server at {self.client.url} returned {len(choices)} "
                    f"completions for n={self.params.num_samples}"
                )
            completions.extend(self._token_ids(choice) for choice in choices)
        return completions

    def _token_ids(self, choice: dict[str, Any]) -> list[int]:
        ids = choice.get("token_ids")
        if ids is None:
            raise RolloutEngineError(
                f"the vLLM server at {self.client.url} returned no token ids: return_token_ids needs "
                "vLLM >= 0.10.2. Upgrade the server; re-tokenizing the text would not give the sampled tokens."
            )
        return until_eos(ids, self.stop_ids)

    def model_name(self) -> str:
        """The name requests use: the synced adapter, else the server's base model."""
        if self.adapter is not None:
            return self.adapter
        if self.served_model is None:
            cards = self.client.get("/v1/models")["data"]
            self.served_model = next((c["id"] for c in cards if not c.get("parent")), cards[0]["id"])
        return self.served_model

    def sync(self, model: torch.nn.Module) -> None:
        """Make the server sample from ``model``'s current LoRA adapter.

        Every process calls it at the same point; the main process saves the
        adapter under ``sync_dir/<name>``, loads it under the new name and
        unloads the previous one, then all processes use the new name.
        """
        from accelerate import PartialState

        peft = peft_model(model)
        if peft is None:
            raise RolloutEngineError(
                "rollout_engine 'vllm_server' takes the policy as a LoRA adapter, but the model has none: "
                "set use_lora: true (full weights cannot be pushed to a vLLM server)"
            )
        state = PartialState()
        self._syncs += 1
        name = f"{self.adapter_prefix}-{self._syncs}"
        if state.is_main_process:
            directory = (self.sync_dir / name).resolve()
            peft.save_pretrained(str(directory))
            self.unload_adapter(name, missing_ok=True)  # left over from an earlier run against this server
            self.load_adapter(name, directory)
            if self.adapter is not None:
                self.unload_adapter(self.adapter)
                shutil.rmtree(self.sync_dir / self.adapter, ignore_errors=True)
            logger.info("vLLM server %s now samples from adapter %s", self.client.url, name)
        state.wait_for_everyone()
        self.adapter = name

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the LoRA adapter at ``path`` (a directory the server can read) under ``name``."""
        self.client.post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})

    def unload_adapter(self, name: str, *, missing_ok: bool = False) -> None:
        """Unload the adapter ``name``; with ``missing_ok``, one the server does not hold is not an error."""
        try:
            self.client.post("/v1/unload_lora_adapter", {"lora_name": name})
        except ServerRefused as error:
            if not (missing_ok and error.status == 404):
                raise
