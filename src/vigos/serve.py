"""``vigos serve``: a small OpenAI-compatible server for a Hugging Face VLM, on a CPU or one GPU.

It speaks the subset of vLLM's OpenAI-compatible API that
:class:`vigos.vllm_rollout.VLLMServerRollout` uses, so the vLLM rollout path
runs (and is tested) where vLLM cannot, without a GPU:

* ``GET /v1/models`` (the base model, then each adapter with its ``parent``)
  and ``GET /health``;
* ``POST /v1/chat/completions``: one user turn (an image as a base64 data URL,
  then text), optionally followed by an assistant pre-fill continued with
  ``continue_final_message``; ``n`` samples with the options of
  :func:`vigos.vllm_rollout.sampling_fields` and a per-request ``seed``; the
  answer carries ``prompt_token_ids`` and each choice's ``token_ids``;
* ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``: PEFT LoRA
  adapters loaded into the model at run time, chosen by a request's ``model``.

Generation is :class:`vigos.rollout.HFGenerateRollout`, one request at a
time, seeded with the request's seed: the same prompt, seed and weights give
the same tokens as sampling in-process. The prompt is rendered from the
messages by the processor's chat template, as vLLM renders it, and must come
out as the student prompt's shape (:func:`vigos.prompts.render_prompt`).
Anything outside the subset (other message shapes, ``logit_bias``, stop
strings, penalties, logprobs, image URLs that are not data URLs) is refused
with HTTP 400 rather than ignored. It binds 127.0.0.1 by default and has no
authentication.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import random
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from .data import Example
from .modeling import encode_image, tokenize_prompt
from .prompts import PromptSpec, render_prompt
from .rollout import HFGenerateRollout, SamplingParams
from .vllm_rollout import stop_token_ids

logger = logging.getLogger(__name__)

# Request fields this server cannot honour, with the values that mean "not used".
_UNSUPPORTED = {
    "logit_bias": (None, {}),
    "stop": (None, [], ""),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "stream": (None, False),
    "allowed_token_ids": (None, []),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "repetition_penalty": (None, 1),
    "min_p": (None, 0),
}


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PolicyServer:
    """The model behind the API: base weights plus any LoRA adapters loaded at run time.

    ``model_name`` is the base model's name in ``/v1/models`` and in
    requests' ``model``. Requests run one at a time (one model, one RNG).
    """

    def __init__(self, model: torch.nn.Module, processor: Any, *, model_name: str):
        self.model = model  # becomes a PEFT model while adapters are loaded
        self.processor = processor
        self.model_name = model_name
        self.adapters: dict[str, str] = {}  # name -> path
        self._lock = threading.Lock()

    def models(self) -> dict[str, Any]:
        """``/v1/models``."""
        cards = [{"id": self.model_name, "object": "model", "owned_by": "vigos", "parent": None}]
        cards += [{"id": name, "object": "model", "owned_by": "vigos", "root": path, "parent": self.model_name}
                  for name, path in self.adapters.items()]
        return {"object": "list", "data": cards}

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/v1/chat/completions``: ``n`` samples of the student prompt the messages describe."""
        name = body.get("model") or self.model_name
        if name != self.model_name and name not in self.adapters:
            raise RequestError(404, f"The model `{name}` does not exist.")
        user_text, image, prefill, rendered = self._prompt(body)
        params, suppressed, seed = self._sampling(body)
        rollout = HFGenerateRollout(self.processor, params, PromptSpec("{question}", prefill))
        rollout.suppressed_ids = sorted(set(rollout.suppressed_ids) | suppressed)
        example = Example(question=user_text, answer="", image=image)
        prompt_ids = tokenize_prompt(self.processor, rendered, encode_image(self.processor, image))
        logger.info("chat completion: model=%s n=%d seed=%d", name, params.num_samples, seed)
        with self._lock, self._policy(name), self._seeded(seed):
            completions = rollout(self.model, [example])
        decode = self.processor.tokenizer.decode
        skip_special = body.get("skip_special_tokens", True)
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": decode(ids, skip_special_tokens=skip_special)},
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
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": generated,
                      "total_tokens": len(prompt_ids) + generated},
        }

    def load_adapter(self, body: dict[str, Any]) -> str:
        """``/v1/load_lora_adapter``: load the PEFT adapter at ``lora_path`` under ``lora_name``."""
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if name in self.adapters or name == self.model_name:
            raise RequestError(400, f"The lora adapter '{name}' has already been loaded.")
        if not (Path(path) / "adapter_config.json").is_file():
            raise RequestError(404, f"Loading lora {name} failed: no adapter_config.json in {path}")
        with self._lock:
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
        name = body.get("lora_name")
        if not name:
            raise RequestError(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        if name not in self.adapters:
            raise RequestError(404, f"The lora adapter '{name}' cannot be found.")
        with self._lock:
            del self.adapters[name]
            if self.adapters:
                self.model.set_adapter(next(iter(self.adapters)))  # never delete the active one
                self.model.delete_adapter(name)
            else:  # the last one: back to the plain model, LoRA layers removed
                self.model = self.model.unload()
        logger.info("unloaded LoRA adapter %s", name)
        return f"Success: LoRA adapter '{name}' removed successfully."

    def _prompt(self, body: dict[str, Any]) -> tuple[str, Image.Image | list[Image.Image], str, str]:
        """(user text, image or images, pre-fill, rendered prompt) of a request in the student prompt's shape."""
        messages = body.get("messages")
        add_generation = bool(body.get("add_generation_prompt", True))
        continue_final = bool(body.get("continue_final_message", False))
        if add_generation and continue_final:
            raise RequestError(400, "continue_final_message and add_generation_prompt cannot both be true.")
        shape = [m.get("role") for m in messages] if isinstance(messages, list) else None
        if shape not in (["user"], ["user", "assistant"]) or (shape == ["user", "assistant"]) != continue_final:
            raise RequestError(400, "this server takes one user message, optionally followed by an assistant "
                                    "pre-fill sent with continue_final_message")
        content = messages[0]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        images = [p for p in parts if p.get("type") == "image_url"]
        texts = [p for p in parts if p.get("type") == "text"]
        if not images or len(texts) != 1 or len(parts) != len(images) + 1:
            raise RequestError(400, "the user message must hold image_url parts (one or more) and one text part")
        decoded = [_decode_image(p["image_url"]["url"]) for p in images]
        image = decoded[0] if len(decoded) == 1 else decoded
        prefill = _text(messages[1]["content"]) if continue_final else ""
        template_parts = [{"type": "image"} if p.get("type") == "image_url" else p for p in parts]
        chat = [{"role": "user", "content": template_parts}]
        if continue_final:
            chat.append({"role": "assistant", "content": prefill})
        rendered = self.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation,
                                                      continue_final_message=continue_final)
        if rendered != render_prompt(self.processor, texts[0]["text"], prefill, len(images)):
            raise RequestError(400, "this server samples only the student prompt's shape: the images, then the "
                                    "text, in one user turn, and the assistant pre-fill")
        return texts[0]["text"], image, prefill, rendered

    def _sampling(self, body: dict[str, Any]) -> tuple[SamplingParams, set[int], int]:
        for key, unused in _UNSUPPORTED.items():
            if body.get(key) not in unused:
                raise RequestError(400, f"{key}={body[key]!r} is not supported by this server")
        temperature = float(body.get("temperature", 1.0))
        if temperature <= 0:
            raise RequestError(400, "temperature must be > 0: this server only samples")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if not max_tokens:
            raise RequestError(400, "max_tokens is required by this server")
        n = int(body.get("n") or 1)
        if n < 1:
            raise RequestError(400, f"n must be at least 1, got {n}")
        stops = set(body.get("stop_token_ids") or [])
        eos = set(stop_token_ids(self.processor))
        if not stops <= eos:
            raise RequestError(400, f"stop_token_ids {sorted(stops - eos)} are not end-of-sequence tokens of this "
                                    f"model ({sorted(eos)}); this server stops on those only")
        suppressed = set()
        for word in body.get("bad_words") or []:
            ids = self.processor.tokenizer.encode(word, add_special_tokens=False)
            if len(ids) != 1:
                raise RequestError(400, f"bad word {word!r} is {len(ids)} tokens; this server takes one-token bad words")
            suppressed.add(ids[0])
        seed = body.get("seed")
        params = SamplingParams(
            temperature=temperature,
            top_p=float(body.get("top_p", 1.0)),
            top_k=max(int(body.get("top_k") or 0), 0),  # -1 and 0 both mean no top-k
            max_new_tokens=int(max_tokens),
            num_samples=n,
            min_new_tokens=int(body.get("min_tokens") or 0),
        )
        return params, suppressed, random.randrange(2**31) if seed is None else int(seed)

    @contextmanager
    def _policy(self, name: str) -> Iterator[None]:
        """The base weights (adapters switched off) or the adapter ``name``, for one request."""
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


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _decode_image(url: str) -> Image.Image:
    header, _, data = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(400, "image_url must be a base64 data URL (data:image/...;base64,...); "
                                "this server fetches nothing")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise RequestError(400, f"image_url holds no readable image ({error})") from None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        policy = self.server.policy
        routes: dict[str, Callable[[], Any]] = {"/health": lambda: "", "/v1/models": policy.models}
        self._answer(routes.get(self.path.rstrip("/")))

    def do_POST(self) -> None:  # noqa: N802
        policy = self.server.policy
        routes = {
            "/v1/chat/completions": policy.chat_completion,
            "/v1/load_lora_adapter": policy.load_adapter,
            "/v1/unload_lora_adapter": policy.unload_adapter,
        }
        route = routes.get(self.path.rstrip("/"))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as error:
            self._send(400, {"error": {"message": f"the body is not JSON ({error})", "code": 400}})
            return
        self._answer(None if route is None else lambda: route(body))

    def _answer(self, handler: Callable[[], Any] | None) -> None:
        if handler is None:
            self._send(404, {"detail": "Not Found"})  # what vLLM (FastAPI) says for an unknown route
            return
        try:
            self._send(200, handler())
        except RequestError as error:
            self._send(error.status, {"error": {"message": str(error), "code": error.status}})
        except Exception as error:  # a failure of the model, not of the request: the client retries 5xx
            logger.exception("request %s failed", self.path)
            self._send(500, {"error": {"message": f"{type(error).__name__}: {error}", "code": 500}})

    def _send(self, status: int, result: Any) -> None:
        text = isinstance(result, str)
        payload = (result if text else json.dumps(result)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], policy: PolicyServer):
        super().__init__(address, _Handler)
        self.policy = policy


def make_server(policy: PolicyServer, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for ``policy`` bound to ``host:port`` (port 0: any free port); call ``serve_forever``."""
    return _Server((host, port), policy)


@contextmanager
def running(policy: PolicyServer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``policy`` from a background thread inside the block; yields the base URL."""
    server = make_server(policy, host, port)
    thread = threading.Thread(target=server.serve_forever, name="vigos-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vigos serve`` options."""
    parser.add_argument("--model", required=True, help="checkpoint directory, hub id or tiny:<arch>")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the base model's name in the API (default: --model)")


def serve_command(args: argparse.Namespace) -> int:
    """Run ``vigos serve`` until interrupted."""
    from .recipe import load_model_and_processor, resolve_model_path

    model, processor = load_model_and_processor(resolve_model_path(args.model))
    if torch.cuda.is_available():
        model = model.to("cuda")
    policy = PolicyServer(model.eval(), processor, model_name=args.served_model_name or args.model)
    server = make_server(policy, args.host, args.port)
    print(f"serving {policy.model_name} at http://{args.host}:{server.server_address[1]} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
