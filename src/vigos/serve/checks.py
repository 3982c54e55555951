"""What ``vigos serve`` accepts: the checks of a request's headers and JSON body.

Everything is checked before any work is done, so a malformed request is an
HTTP 4xx whose message names the header or field and what to send instead,
never a 500 after a failed decode or allocation:

* headers (:func:`check_headers`): a browser request from another origin is
  refused (403), so no web page can drive the server; with an API key, the
  ``Authorization: Bearer`` header must carry it (401); a POST must be
  ``application/json`` (415) with a ``Content-Length`` (411) no larger than
  the server's cap (413);
* the body (:func:`parse_body`, :func:`chat_prompt`, :func:`sampling_request`):
  a JSON object; one user message of ``image_url`` parts (base64 data URLs,
  decoded by :func:`vigos.data.images.decode_image_bytes`) and one text part, with an
  optional assistant pre-fill; each sampling field with its type and range.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from dataclasses import dataclass
from email.message import Message
from typing import Any

from PIL import Image

from vigos.data.images import UnreadableImageError, decode_image_bytes
from vigos.rollout.hf import SamplingParams

# Request fields this server cannot honour, with the values that mean "not used".
UNSUPPORTED = {
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
_SEEDS = (-(2**63), 2**64 - 1)  # what torch.manual_seed takes
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def own_origins(host: str, port: int) -> frozenset[str]:
    """The browser origins of a server bound to ``host:port``: the only ones whose requests it takes.

    A loopback server is the same server under each loopback name; a wildcard
    bind (``0.0.0.0``, ``::``) is taken as a loopback one, since which of the
    machine's names a page would use cannot be known.
    """
    names = set(_LOOPBACK) if host in (*_LOOPBACK, "", "0.0.0.0", "::") else {host}
    return frozenset(f"http://{f'[{name}]' if ':' in name else name}:{port}" for name in names)


def check_headers(
    headers: Message, *, path: str, method: str, origins: frozenset[str], api_key: str | None, max_body_bytes: int
) -> int:
    """Refuse a request by its headers alone; the body's length for a POST (0 for a GET).

    Raises :class:`RequestError`: 403 for a browser request from another
    origin, 401 without the API key (every route but ``/health``), and for a
    POST 415 unless it is JSON, 411 without a ``Content-Length``, 400 for a
    malformed one and 413 for one over ``max_body_bytes``.
    """
    origin = headers.get("Origin")
    # A page on another site may send requests to a local server (CSRF, DNS rebinding): browsers say so.
    if (origin is not None and origin.lower() not in origins) or headers.get("Sec-Fetch-Site") == "cross-site":
        raise RequestError(
            403,
            f"cross-origin request refused (Origin {_shown(origin)}, Sec-Fetch-Site "
            f"{_shown(headers.get('Sec-Fetch-Site'))}): this server takes no requests from web "
            "pages of other origins",
        )
    if api_key is not None and path != "/health":
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        # Header values arrive decoded as latin-1: back to their bytes, compared in constant time.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("latin-1", "replace"), api_key.encode()
        ):
            raise RequestError(
                401,
                "missing or wrong API key: send the header `Authorization: Bearer KEY` with "
                "the key vigos serve was started with (--api-key or VIGOS_SERVE_API_KEY)",
            )
    if method != "POST":
        return 0
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError(415, f"Content-Type must be application/json, got {_shown(content_type or None)}")
    if headers.get("Transfer-Encoding") is not None:
        raise RequestError(411, "Transfer-Encoding is not accepted: send the body with a Content-Length")
    length = headers.get("Content-Length")
    if length is None:
        raise RequestError(411, "Content-Length is required")
    if not length.strip().isdigit():  # isdigit: no sign, no spaces inside, no underscores
        raise RequestError(400, f"Content-Length must be a whole number of bytes, got {_shown(length)}")
    if int(length) > max_body_bytes:
        raise RequestError(
            413,
            f"the body is {int(length)} bytes (Content-Length), over this server's cap of "
            f"{max_body_bytes} bytes: send fewer or smaller images, or start vigos serve "
            "with a larger --max-body-mb",
        )
    return int(length)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds; 400 for anything else (NaN and Infinity are not JSON)."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        body = json.loads(raw, parse_constant=no_constants)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        raise RequestError(400, f"the body is not JSON ({type(error).__name__}: {error})") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the body must be a JSON object, got a JSON {_kind(body)}")
    return body


@dataclass(frozen=True)
class ChatPrompt:
    """The prompt a chat completion request describes, its images decoded."""

    user_text: str
    images: list[Image.Image]
    template_parts: list[dict[str, Any]]  # the user content as the chat template takes it, images in place
    prefill: str
    add_generation_prompt: bool
    continue_final_message: bool


def chat_prompt(body: dict[str, Any]) -> ChatPrompt:
    """The checked ``messages``: one user message (image_url parts and one text part), optionally followed by
    an assistant pre-fill sent with ``continue_final_message``."""
    add_generation = boolean(body, "add_generation_prompt", True)
    continue_final = boolean(body, "continue_final_message", False)
    if add_generation and continue_final:
        raise RequestError(400, "continue_final_message and add_generation_prompt cannot both be true.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, f"messages must be a non-empty list of message objects, got {_kind(messages)}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{index}] must be an object with role and content, got {_kind(message)}")
        if message.get("content") is None:
            raise RequestError(400, f"messages[{index}].content is missing")
    shape = [m.get("role") for m in messages]
    if shape not in (["user"], ["user", "assistant"]) or (shape == ["user", "assistant"]) != continue_final:
        raise RequestError(
            400,
            "messages: this server takes one user message, optionally followed by an "
            "assistant pre-fill sent with continue_final_message",
        )
    parts = _parts(messages[0]["content"], "messages[0].content")
    images = [(i, p) for i, p in enumerate(parts) if p["type"] == "image_url"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    if not images or len(texts) != 1:
        raise RequestError(400, "messages[0].content must hold image_url parts (one or more) and one text part")
    decoded = [_image(part["image_url"], f"messages[0].content[{i}].image_url") for i, part in images]
    prefill = ""
    if continue_final:
        pieces = _parts(messages[1]["content"], "messages[1].content")
        if any(p["type"] != "text" for p in pieces):
            raise RequestError(400, "messages[1].content (the assistant pre-fill) must be text")
        prefill = "".join(p["text"] for p in pieces)
    template_parts = [{"type": "image"} if p["type"] == "image_url" else p for p in parts]
    return ChatPrompt(texts[0], decoded, template_parts, prefill, add_generation, continue_final)


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as a list of checked parts (a string is one text part)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError(400, f"{where} must be a string or a list of parts, got {_kind(content)}")
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and not isinstance(part.get("text"), str):
            raise RequestError(400, f"{at}.text must be a string, got {_kind(part.get('text'))}")
        if kind == "image_url" and not (
            isinstance(part.get("image_url"), dict) and isinstance(part["image_url"].get("url"), str)
        ):
            raise RequestError(
                400,
                f'{at}.image_url must be an object {{"url": "data:image/...;base64,..."}}, '
                f"got {_kind(part.get('image_url'))}",
            )
        if kind not in ("text", "image_url"):
            raise RequestError(400, f"{at} must be an object whose type is 'text' or 'image_url'")
    return content


def _image(image_url: dict[str, Any], where: str) -> Image.Image:
    return image_from_data_url(image_url["url"], f"{where}.url")


def image_from_data_url(url: str, where: str) -> Image.Image:
    """The image a base64 ``data:image/...`` URL holds; 400 naming ``where`` for anything else."""
    header, _, data = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(
            400, f"{where} must be a base64 data URL (data:image/...;base64,...); this server fetches nothing"
        )
    try:
        return decode_image_bytes(base64.b64decode(data, validate=True))
    except binascii.Error as error:
        raise RequestError(400, f"{where} is not valid base64 ({error})") from None
    except UnreadableImageError as error:
        raise RequestError(400, f"{where} holds no readable image ({error})") from None


@dataclass(frozen=True)
class SamplingRequest:
    """The checked sampling fields of a chat completion request."""

    params: SamplingParams
    max_tokens_field: str  # max_completion_tokens or max_tokens: the one the request set, for messages
    stop_token_ids: frozenset[int]
    bad_words: tuple[str, ...]
    seed: int | None
    skip_special_tokens: bool


def sampling_request(body: dict[str, Any], *, max_n: int) -> SamplingRequest:
    """Each sampling field the server honours, checked for type and range; 400 naming the field.

    ``max_tokens`` is checked against the model's context by the caller, once
    the prompt's length is known.
    """
    for key, unused in UNSUPPORTED.items():
        if body.get(key) not in unused:
            raise RequestError(400, f"{key}={_shown(body[key])} is not supported by this server")
    temperature = number(body, "temperature", 1.0)
    if temperature <= 0:
        raise RequestError(400, f"temperature must be > 0, got {temperature}: this server only samples")
    top_p = number(body, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise RequestError(400, f"top_p must be in (0, 1], got {top_p}")
    top_k = integer(body, "top_k", -1)
    if top_k < -1:
        raise RequestError(400, f"top_k must be -1 or 0 (no top-k) or at least 1, got {top_k}")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = integer(body, field, None)
    if max_tokens is None:
        raise RequestError(400, "max_tokens is required by this server")
    if max_tokens < 1:
        raise RequestError(400, f"{field} must be at least 1, got {max_tokens}")
    min_tokens = integer(body, "min_tokens", 0)
    if not 0 <= min_tokens <= max_tokens:
        raise RequestError(400, f"min_tokens must be between 0 and {field} ({max_tokens}), got {min_tokens}")
    n = integer(body, "n", 1)
    if not 1 <= n <= max_n:
        raise RequestError(400, f"n must be between 1 and {max_n} (this server's --max-n), got {n}")
    seed = integer(body, "seed", None)
    if seed is not None and not _SEEDS[0] <= seed <= _SEEDS[1]:
        raise RequestError(400, f"seed must be a 64-bit integer, got {seed}")
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=max(top_k, 0),
        max_new_tokens=max_tokens,
        num_samples=n,
        min_new_tokens=min_tokens,
    )
    return SamplingRequest(
        params,
        field,
        frozenset(_list(body, "stop_token_ids", int)),
        tuple(_list(body, "bad_words", str)),
        seed,
        boolean(body, "skip_special_tokens", True),
    )


def integer(body: dict[str, Any], key: str, default: Any) -> Any:
    """``body[key]`` as an int (``default`` when absent or null); 400 for any other type, bools included."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{key} must be an integer, got {_kind(value)} {_shown(value)}")
    return value


def number(body: dict[str, Any], key: str, default: float) -> float:
    """``body[key]`` as a finite float (``default`` when absent or null); 400 for anything else."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(400, f"{key} must be a finite number, got {_kind(value)} {_shown(value)}")
    return float(value)


def boolean(body: dict[str, Any], key: str, default: bool) -> bool:
    """``body[key]`` as a bool (``default`` when absent or null); 400 for anything else."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{key} must be true or false, got {_kind(value)} {_shown(value)}")
    return value


def _list(body: dict[str, Any], key: str, kind: type) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    wanted = "an integer" if kind is int else "a string"
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list, got {_kind(value)} {_shown(value)}")
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, kind):
            raise RequestError(400, f"{key}[{index}] must be {wanted}, got {_kind(item)} {_shown(item)}")
    return value


def string(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` as a non-empty string, or None when absent, null or empty; 400 for another type."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"{key} must be a string, got {_kind(value)} {_shown(value)}")
    return value or None


def _shown(value: Any) -> str:
    """A value's repr for a message, cut short: a refused field may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    """A value's JSON type, for messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)
