"""Raw HTTP helpers shared by the tests of `vigos serve` (tests/serve): a well-formed request, raw sends."""

from __future__ import annotations

import base64
import http.client
import io
import json
from urllib.parse import urlsplit

from PIL import Image

from vigos.prompts import DESCRIPTION_OPEN
from vigos.rollout.hf import SamplingParams
from vigos.rollout.vllm_server import chat_request, sampling_fields

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


def body(image: Image.Image | None = None, **fields) -> dict:
    """A well-formed chat completion request (2 tokens, 1 sample) with ``fields`` set."""
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=2, num_samples=1)
    request = chat_request(
        "tiny",
        "Q?",
        DESCRIPTION_OPEN,
        image or Image.new("RGB", (56, 56), (200, 30, 30)),
        sampling_fields(params, seed=1, stop_ids=[], bad_words=[]),
    )
    return {**request, **fields}


def send(
    base: str, method: str, path: str, data: bytes | None = None, headers: dict | None = None, length: bool = True
) -> tuple[int, object, http.client.HTTPResponse]:
    """One raw request; (status, parsed answer, response). ``length=False`` sends no Content-Length."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    connection.putrequest(method, path, skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    if data is not None and length and "Content-Length" not in (headers or {}):
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    if data:
        connection.send(data)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    try:
        return response.status, json.loads(raw), response
    except json.JSONDecodeError:
        return response.status, raw.decode(), response


def post(base: str, payload: object, headers: dict | None = None) -> tuple[int, str]:
    """POST ``payload`` as JSON; (status, the error message or the parsed answer)."""
    status, answer, _ = send(base, "POST", CHAT, json.dumps(payload).encode(), {**JSON, **(headers or {})})
    return status, answer["error"]["message"] if isinstance(answer, dict) and "error" in answer else answer


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def with_image_url(request: dict, image_url: object) -> dict:
    user = {
        **request["messages"][0],
        "content": [{"type": "image_url", "image_url": image_url}, request["messages"][0]["content"][1]],
    }
    return {**request, "messages": [user, request["messages"][1]]}
