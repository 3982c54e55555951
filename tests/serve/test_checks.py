"""`vigos serve` refuses malformed requests with a 400 naming the field (vigos.serve.checks), over raw HTTP.

Each refusal is checked by its status and by its message naming the field;
the bodies are sent byte for byte, as a buggy client or an attacker would send them.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from PIL import Image

from serve_requests import CHAT, JSON, body, png, post, send, with_image_url

# --- item 5: malformed bodies are 400s naming the field ---


def bomb() -> str:
    """A PNG whose header claims 20000 x 20000 pixels (four times Pillow's bomb limit) in a few bytes."""
    raw = base64.b64decode(png(Image.new("L", (8, 8)))[len("data:image/png;base64,") :])
    header = raw[12:16] + struct.pack(">II", 20000, 20000) + raw[24:29]
    patched = raw[:16] + struct.pack(">II", 20000, 20000) + raw[24:29] + struct.pack(">I", zlib.crc32(header))
    return "data:image/png;base64," + base64.b64encode(patched + raw[33:]).decode()


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "the body must be a JSON object, got a JSON array"),
        ("hello", "the body must be a JSON object, got a JSON string"),
        ({"messages": "hi", "max_tokens": 2}, "messages must be a non-empty list of message objects, got string"),
        ({"messages": [], "max_tokens": 2}, "messages must be a non-empty list"),
        ({"messages": ["hi"], "max_tokens": 2}, "messages[0] must be an object with role and content, got string"),
        ({"messages": [{"role": "user"}], "max_tokens": 2}, "messages[0].content is missing"),
        (
            {"messages": [{"role": "user", "content": 5}], "max_tokens": 2},
            "messages[0].content must be a string or a list of parts, got number",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}], "max_tokens": 2},
            "messages[0].content[0].text must be a string, got number",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}], "max_tokens": 2},
            "messages[0].content[0] must be an object whose type is 'text' or 'image_url'",
        ),
    ],
)
def test_a_malformed_body_is_a_400(url, payload, message):
    status, got = post(url, payload)
    assert status == 400 and message in got


@pytest.mark.parametrize(
    "image_url, message",
    [
        ("data:image/png;base64,AAAA", 'messages[0].content[0].image_url must be an object {"url": '),
        ({"link": "x"}, "messages[0].content[0].image_url must be an object"),
        ({"url": "file:///etc/passwd"}, "messages[0].content[0].image_url.url must be a base64 data URL"),
        ({"url": "http://127.0.0.1:1/x.png"}, "this server fetches nothing"),
        ({"url": "data:image/png;base64,not base64!"}, "messages[0].content[0].image_url.url is not valid base64"),
        (
            {"url": "data:image/png;base64," + base64.b64encode(b"no image").decode()},
            "messages[0].content[0].image_url.url holds no readable image",
        ),
        ({"url": bomb()}, "holds no readable image (unreadable image bytes (DecompressionBombError"),
    ],
)
def test_a_bad_image_is_a_400_naming_the_part(url, image_url, message):
    status, got = post(url, with_image_url(body(), image_url))
    assert status == 400 and message in got


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "the body is not JSON (JSONDecodeError"),
        (b'{"temperature": NaN}', "the body is not JSON (ValueError: NaN is not a JSON number)"),
        (b"\xff\xfe\x00", "the body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON (RecursionError"),
    ],
)
def test_a_body_that_is_not_json_is_a_400(url, raw, message):
    status, answer, _ = send(url, "POST", CHAT, raw, JSON)
    assert status == 400 and message in answer["error"]["message"]


@pytest.mark.parametrize(
    "fields, message",
    [
        # item 4: sizes that allocated before failing, or passed the context
        (
            {"max_tokens": 10**9},
            "max_tokens=1000000000 with the 24-token prompt passes the model's context of 32768 "
            "tokens: ask for at most 32744",
        ),
        ({"max_tokens": 40_000}, "passes the model's context of 32768 tokens"),
        ({"max_completion_tokens": 40_000}, "max_completion_tokens=40000 with the 24-token prompt passes"),
        ({"n": 10**6}, "n must be between 1 and 8 (this server's --max-n), got 1000000"),
        # item 5: types and ranges
        ({"n": 0}, "n must be between 1 and 8 (this server's --max-n), got 0"),
        ({"n": 1.5}, "n must be an integer, got number 1.5"),
        ({"n": True}, "n must be an integer, got boolean True"),
        ({"max_tokens": -1}, "max_tokens must be at least 1, got -1"),
        ({"max_tokens": 0}, "max_tokens must be at least 1, got 0"),
        ({"max_tokens": "12"}, "max_tokens must be an integer, got string '12'"),
        ({"max_tokens": None}, "max_tokens is required by this server"),
        ({"temperature": "hot"}, "temperature must be a finite number, got string 'hot'"),
        ({"temperature": False}, "temperature must be a finite number, got boolean False"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"top_p": 0}, "top_p must be in (0, 1], got 0.0"),
        ({"top_p": -0.5}, "top_p must be in (0, 1], got -0.5"),
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        ({"top_k": -2}, "top_k must be -1 or 0 (no top-k) or at least 1, got -2"),
        ({"top_k": "20"}, "top_k must be an integer, got string '20'"),
        ({"min_tokens": 3}, "min_tokens must be between 0 and max_tokens (2), got 3"),
        ({"min_tokens": -1}, "min_tokens must be between 0 and max_tokens (2), got -1"),
        ({"seed": "7"}, "seed must be an integer, got string '7'"),
        ({"seed": 2**70}, "seed must be a 64-bit integer"),
        ({"stop_token_ids": 5}, "stop_token_ids must be a list, got number 5"),
        ({"stop_token_ids": ["a"]}, "stop_token_ids[0] must be an integer, got string 'a'"),
        ({"bad_words": [1]}, "bad_words[0] must be a string, got number 1"),
        ({"skip_special_tokens": "no"}, "skip_special_tokens must be true or false, got string 'no'"),
        ({"continue_final_message": 1}, "continue_final_message must be true or false, got number 1"),
        ({"model": ["tiny"]}, "model must be a string, got array"),
        ({"logit_bias": {"5": -100}}, "logit_bias={'5': -100} is not supported by this server"),
    ],
)
def test_each_sampling_field_is_checked(url, fields, message):
    status, got = post(url, body(**fields))
    assert status == 400, got
    assert message in got


def test_an_infinite_number_is_refused(url):
    # 1e400 is valid JSON that Python reads as inf.
    raw = json.dumps(body(temperature=12345)).replace("12345", "1e400").encode()
    status, answer, _ = send(url, "POST", CHAT, raw, JSON)
    assert status == 400 and "temperature must be a finite number, got number inf" in answer["error"]["message"]


def test_adapter_fields_are_checked(url, policy):
    for payload, message in [
        ({"lora_name": 5, "lora_path": "/x"}, "lora_name must be a string, got number 5"),
        ({"lora_name": "a", "lora_path": ["/x"]}, "lora_path must be a string, got array"),
    ]:
        status, answer, _ = send(url, "POST", "/v1/load_lora_adapter", json.dumps(payload).encode(), JSON)
        assert status == 400 and message in answer["error"]["message"]
    status, answer, _ = send(url, "POST", "/v1/unload_lora_adapter", b"[]", JSON)
    assert status == 400 and "must be a JSON object" in answer["error"]["message"]
    assert policy.adapters == {}
