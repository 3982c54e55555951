"""``vigos serve``: a small OpenAI-compatible server for a Hugging Face VLM, on a CPU or one GPU.

It speaks the subset of vLLM's OpenAI-compatible API that
:class:`vigos.rollout.vllm_server.VLLMServerRollout` uses, so the vLLM rollout path
runs (and is tested) where vLLM cannot, without a GPU:

* ``GET /v1/models`` (the base model, then each adapter with its ``parent``)
  and ``GET /health``;
* ``POST /v1/chat/completions``: one user turn (an image as a base64 data URL,
  then text), optionally followed by an assistant pre-fill continued with
  ``continue_final_message``; ``n`` samples with the options of
  :func:`vigos.rollout.vllm_server.sampling_fields` and a per-request ``seed``; the
  answer carries ``prompt_token_ids`` and each choice's ``token_ids``;
* ``POST /v1/completions`` with token ids as the prompt and ``prompt_logprobs``:
  the top-k log-probabilities at every position of given ids, with the images
  (a served teacher; :mod:`vigos.serve.prompt_scoring`);
* ``POST /tokenize``: a text's token ids (vLLM's route; the served teacher's
  vocabulary check);
* ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``: PEFT LoRA
  adapters loaded into the model at run time, chosen by a request's ``model``.

Generation is :class:`vigos.rollout.hf.HFGenerateRollout`, one request at a
time, seeded with the request's seed: the same prompt, seed and weights give
the same tokens as sampling in-process. The prompt is rendered from the
messages by the processor's chat template, as vLLM renders it, and must come
out as the student prompt's shape (:func:`vigos.prompts.render_prompt`).
Anything outside the subset (other message shapes, ``logit_bias``, stop
strings, penalties, logprobs, image URLs that are not data URLs) is refused
with HTTP 400 rather than ignored, and every request is checked before any
work is done (:mod:`vigos.serve.checks`): its origin, its API key when the
server has one, its size, and each field's type and range, ``max_tokens``
against the model's context. It binds 127.0.0.1 by default. Connections
queue while a generation runs, and ``/health`` and ``/v1/models`` answer
meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from vigos.data.rows import Example
from vigos.errors import ConfigError
from vigos.models.modeling import encode_image, end_token_ids, tokenize_prompt
from vigos.prompts import PromptSpec, render_prompt
from vigos.rollout.hf import HFGenerateRollout
from vigos.serve.checks import (
    ChatPrompt,
    RequestError,
    SamplingRequest,
    boolean,
    chat_prompt,
    check_headers,
    own_origins,
    parse_body,
    sampling_request,
    string,
)
from vigos.serve.prompt_scoring import completion_answer, prompt_logprobs, prompt_scoring_request

logger = logging.getLogger(__name__)

API_KEY_ENV = "VIGOS_SERVE_API_KEY"
DEFAULT_MAX_BODY_MB = 64.0  # a few large images as base64 PNG
DEFAULT_MAX_N = 64


class PolicyServer:
    """The model behind the API: base weights plus any LoRA adapters loaded at run time.

    ``model_name`` is the base model's name in ``/v1/models`` and in
    requests' ``model``. Requests run one at a time (one model, one RNG).
    ``max_n`` caps a request's ``n``; ``max_model_len`` caps its prompt plus
    ``max_tokens`` (default: the model's ``max_position_embeddings``, the
    most it may be). Raises :class:`vigos.errors.ConfigError` for a cap out of
    range.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        model_name: str,
        max_n: int = DEFAULT_MAX_N,
        max_model_len: int | None = None,
    ):
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        if max_model_len is None and context is None:
            raise ConfigError(
                "the model's config has no max_position_embeddings: give max_model_len "
                "(--max-model-len), the most tokens a prompt and its completion may hold"
            )
        if max_model_len is not None and not 1 <= max_model_len <= (context or max_model_len):
            raise ConfigError(
                f"max_model_len (--max-model-len) must be between 1 and the model's context of "
                f"{context} tokens, got {max_model_len}"
            )
        if max_n < 1:
            raise ConfigError(f"max_n (--max-n) must be at least 1, got {max_n}")
        self.model = model  # becomes a PEFT model while adapters are loaded
        self.processor = processor
        self.model_name = model_name
        self.max_n = max_n
        self.max_model_len: int = max_model_len or context
        self.adapters: dict[str, str] = {}  # name -> path
        self._lock = threading.Lock()

    def models(self) -> dict[str, Any]:
        """``/v1/models``."""
        cards = [
            {
                "id": self.model_name,
                "object": "model",
                "owned_by": "vigos",
                "parent": None,
                "max_model_len": self.max_model_len,
            }
        ]
        cards += [
            {"id": name, "object": "model", "owned_by": "vigos", "root": path, "parent": self.model_name}
            for name, path in list(self.adapters.items())
        ]  # a copy: a load may change the dict meanwhile
        return {"object": "list", "data": cards}

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/v1/chat/completions``: ``n`` samples of the student prompt the messages describe."""
        name = string(body, "model") or self.model_name
        if name != self.model_name and name not in self.adapters:
            raise RequestError(404, f"The model `{name}` does not exist.")
        sampling = sampling_request(body, max_n=self.max_n)
        suppressed = self._suppressed(sampling)
        prompt = chat_prompt(body)
        rendered = self._rendered(prompt)
        image = prompt.images[0] if len(prompt.images) == 1 else prompt.images
        prompt_ids = tokenize_prompt(self.processor, rendered, encode_image(self.processor, image))
        self._check_length(len(prompt_ids), sampling)
        params = sampling.params
        seed = random.randrange(2**31) if sampling.seed is None else sampling.seed
        rollout = HFGenerateRollout(self.processor, params, PromptSpec("{question}", prompt.prefill))
        rollout.suppressed_ids = sorted(set(rollout.suppressed_ids) | suppressed)
        example = Example(question=prompt.user_text, answer="", image=image)
        logger.info("chat completion: model=%s n=%d seed=%d", name, params.num_samples, seed)
        with self._lock, self._policy(name), self._seeded(seed):
            completions = rollout(self.model, [example])
        decode = self.processor.tokenizer.decode
        choices = [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": decode(ids, skip_special_tokens=sampling.skip_special_tokens),
                },
                "finish_reason": "stop" if ids and ids[-1] in rollout.eos_token_ids else "length",
                "stop_reason": None,
                "token_ids": ids,
            }
            for index, ids in enumerate(completions)
        ]
        generated = sum(len(ids) for ids in completions)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "prompt_token_ids": prompt_ids,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": generated,
                "total_tokens": len(prompt_ids) + generated,
            },
        }

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/tokenize`` (vLLM's): the token ids of a text, so a client can check it shares this tokenizer."""
        text = string(body, "prompt")
        if text is None:
            raise RequestError(400, "prompt must be a string")
        ids = self.processor.tokenizer(text, add_special_tokens=boolean(body, "add_special_tokens", True))["input_ids"]
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids}

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/v1/completions`` with ``prompt_logprobs``: the log-probabilities of given token ids (a served
        teacher's answer; see :mod:`vigos.serve.prompt_scoring`)."""
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        request = prompt_scoring_request(body, vocab_size=vocab_size)
        name = request.model or self.model_name
        if name != self.model_name and name not in self.adapters:
            raise RequestError(404, f"The model `{name}` does not exist.")
        if len(request.prompt) + 1 > self.max_model_len:
            raise RequestError(
                400,
                f"prompt: {len(request.prompt)} tokens and max_tokens=1 pass the model's context of "
                f"{self.max_model_len} tokens",
            )
        logger.info("prompt scoring: model=%s tokens=%d k=%d", name, len(request.prompt), request.top_k)
        with self._lock, self._policy(name):
            scored, next_token = prompt_logprobs(self.model, self.processor, request)
        return completion_answer(name, request, scored, next_token, self.processor.tokenizer)

    def load_adapter(self, body: dict[str, Any]) -> str:
        """``/v1/load_lora_adapter``: load the PEFT adapter at ``lora_path`` under ``lora_name``."""
        name, path = string(body, "lora_name"), string(body, "lora_path")
        if not name or not path:
            raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if not (Path(path) / "adapter_config.json").is_file():
            raise RequestError(404, f"Loading lora {name} failed: no adapter_config.json in {path}")
        with self._lock:
            if name in self.adapters or name == self.model_name:
                raise RequestError(400, f"The lora adapter '{name}' has already been loaded.")
            if self.adapters:
                self.model.load_adapter(path, adapter_name=name)
            else:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.adapters[name] = str(path)
        logger.info("loaded LoRA adapter %s from %s", name, path)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_adapter(self, body: dict[str, Any]) -> str:
        """``/v1/unload_lora_adapter``: drop the adapter ``lora_name``."""
        name = string(body, "lora_name")
        if not name:
            raise RequestError(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        with self._lock:
            if name not in self.adapters:
                raise RequestError(404, f"The lora adapter '{name}' cannot be found.")
            del self.adapters[name]
            if self.adapters:
                self.model.set_adapter(next(iter(self.adapters)))  # never delete the active one
                self.model.delete_adapter(name)
            else:  # the last one: back to the plain model, LoRA layers removed
                self.model = self.model.unload()
        logger.info("unloaded LoRA adapter %s", name)
        return f"Success: LoRA adapter '{name}' removed successfully."

    def _rendered(self, prompt: ChatPrompt) -> str:
        """The prompt rendered by the chat template, as vLLM renders it; 400 unless it is the student prompt's shape."""
        chat = [{"role": "user", "content": prompt.template_parts}]
        if prompt.continue_final_message:
            chat.append({"role": "assistant", "content": prompt.prefill})
        rendered = self.processor.apply_chat_template(
            chat,
            tokenize=False,
            add_generation_prompt=prompt.add_generation_prompt,
            continue_final_message=prompt.continue_final_message,
        )
        if rendered != render_prompt(self.processor, prompt.user_text, prompt.prefill, len(prompt.images)):
            raise RequestError(
                400,
                "this server samples only the student prompt's shape: the images, then the "
                "text, in one user turn, and the assistant pre-fill",
            )
        return rendered

    def _suppressed(self, sampling: SamplingRequest) -> set[int]:
        """The token ids of the bad words; 400 for stop tokens or bad words this server cannot honour."""
        eos = set(end_token_ids(self.processor.tokenizer))
        if not sampling.stop_token_ids <= eos:
            raise RequestError(
                400,
                f"stop_token_ids {sorted(sampling.stop_token_ids - eos)} are not end-of-sequence "
                f"tokens of this model ({sorted(eos)}); this server stops on those only",
            )
        suppressed = set()
        for word in sampling.bad_words:
            ids = self.processor.tokenizer.encode(word, add_special_tokens=False)
            if len(ids) != 1:
                raise RequestError(
                    400, f"bad_words: {word[:40]!r} is {len(ids)} tokens; this server takes one-token bad words"
                )
            suppressed.add(ids[0])
        return suppressed

    def _check_length(self, prompt_tokens: int, sampling: SamplingRequest) -> None:
        """400 unless the prompt and ``max_tokens`` new tokens fit the context (the KV cache is sized by them)."""
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise RequestError(
                400,
                f"messages: the prompt is {prompt_tokens} tokens, over the model's context of "
                f"{self.max_model_len}: send fewer or smaller images, or a shorter text",
            )
        if sampling.params.max_new_tokens > room:
            raise RequestError(
                400,
                f"{sampling.max_tokens_field}={sampling.params.max_new_tokens} with the "
                f"{prompt_tokens}-token prompt passes the model's context of "
                f"{self.max_model_len} tokens: ask for at most {room}",
            )

    @contextmanager
    def _policy(self, name: str) -> Iterator[None]:
        """The base weights (adapters switched off) or the adapter ``name``, for one request."""
        if name != self.model_name and name not in self.adapters:  # unloaded while the request waited
            raise RequestError(404, f"The model `{name}` does not exist.")
        if not self.adapters:
            yield
        elif name == self.model_name:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(name)
            yield

    @contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """Torch's RNG seeded with ``seed`` inside; the caller's RNG state untouched outside."""
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield


class _NoRoute(RequestError):
    def __init__(self) -> None:
        super().__init__(404, "Not Found")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Seconds a client may stall mid-request (or idle between requests) before its connection is closed,
    # so stalled clients cannot pin threads.
    timeout = 60

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(lambda: self._admit()[0]())

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def handle_expect_100(self) -> bool:
        # A client that waits for "100 Continue" (curl does, for large bodies) learns of a refusal before sending.
        try:
            self._admit()
        except RequestError as error:
            self._refuse(error, body_unread=True)
            return False
        return super().handle_expect_100()

    def _routes(self) -> dict[str, Callable[..., Any]]:
        policy = self.server.policy
        if self.command == "GET":
            return {"/health": lambda: "", "/v1/models": policy.models}
        return {
            "/v1/chat/completions": policy.chat_completion,
            "/v1/completions": policy.completion,
            "/tokenize": policy.tokenize,
            "/v1/load_lora_adapter": policy.load_adapter,
            "/v1/unload_lora_adapter": policy.unload_adapter,
        }

    def _admit(self) -> tuple[Callable[..., Any], int]:
        """The request's route and its body's length, once its headers pass the checks that come before reading
        a body."""
        path = self.path.rstrip("/")
        server = self.server
        length = check_headers(
            self.headers,
            path=path,
            method=self.command,
            origins=server.origins,
            api_key=server.api_key,
            max_body_bytes=server.max_body_bytes,
        )
        route = self._routes().get(path)
        if route is None:
            raise _NoRoute()
        return route, length

    def _post(self) -> Any:
        route, length = self._admit()
        raw = self.rfile.read(length)  # a stalled client raises TimeoutError after `timeout`
        self._body_read = len(raw) == length
        if not self._body_read:
            raise RequestError(400, f"the body ended after {len(raw)} of its {length} bytes (Content-Length)")
        return route(parse_body(raw))

    def _answer(self, work: Callable[[], Any]) -> None:
        self._body_read = self.command != "POST"
        try:
            result = work()
        except RequestError as error:
            self._refuse(error, body_unread=not self._body_read)
            return
        except TimeoutError:
            logger.warning(
                "%s %s: the client sent nothing for %d s; connection closed", self.command, self.path, self.timeout
            )
            self.close_connection = True
            return
        except Exception as error:  # a failure of the model, not of the request: the client retries 5xx
            logger.exception("request %s failed", self.path)
            self._send(500, {"error": {"message": f"{type(error).__name__}: {error}", "code": 500}})
            return
        self._send(200, result)

    def _refuse(self, error: RequestError, *, body_unread: bool) -> None:
        if body_unread:  # the unread body would be taken for the next request: end the connection after this answer
            self.close_connection = True
        if isinstance(error, _NoRoute):
            payload: dict[str, Any] = {"detail": "Not Found"}  # what vLLM (FastAPI) says for an unknown route
        else:
            payload = {"error": {"message": str(error), "code": error.status}}
        extra = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        self._send(error.status, payload, extra)

    def _send(self, status: int, result: Any, headers: dict[str, str] | None = None) -> None:
        text = isinstance(result, str)
        payload = (result if text else json.dumps(result)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Connections waiting to be accepted: past this the kernel drops new ones (the default of 5 reset a burst).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], policy: PolicyServer, *, api_key: str | None, max_body_bytes: int):
        super().__init__(address, _Handler)
        self.policy = policy
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.origins = own_origins(address[0], self.server_address[1])


def make_server(
    policy: PolicyServer,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
) -> ThreadingHTTPServer:
    """An HTTP server for ``policy`` bound to ``host:port`` (port 0: any free port); call ``serve_forever``.

    ``api_key``: when given, every route but ``/health`` needs ``Authorization:
    Bearer <api_key>``. ``max_body_mb``: the largest request body taken, in
    MiB. Raises :class:`vigos.errors.ConfigError` for an empty key or a cap
    that is not positive.
    """
    _check_options(api_key, max_body_mb)
    return _Server((host, port), policy, api_key=api_key, max_body_bytes=int(max_body_mb * 2**20))


def _check_options(api_key: str | None, max_body_mb: float) -> None:
    if api_key is not None and not api_key.strip():
        raise ConfigError("api_key (--api-key) is empty: give a key, or none for a server without one")
    if not max_body_mb > 0:
        raise ConfigError(f"max_body_mb (--max-body-mb) must be > 0, got {max_body_mb}")


@contextmanager
def running(policy: PolicyServer, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Iterator[str]:
    """Serve ``policy`` from a background thread inside the block; yields the base URL.

    ``options`` go to :func:`make_server`.
    """
    server = make_server(policy, host, port, **options)
    thread = threading.Thread(target=server.serve_forever, name="vigos-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
