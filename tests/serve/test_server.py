"""`vigos serve` refuses what it should, before doing any work: raw HTTP against the server serving a tiny model.

Each refusal is checked by its status and by its message naming the header or
field; malformed requests are sent byte for byte with ``http.client`` (or a
raw socket), as a browser, a buggy client or an attacker would send them. The
field-by-field checks of a request body are in test_checks.py.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from serve_requests import CHAT, JSON, body, png, post, send, with_image_url
from vigos.cli import build_parser
from vigos.data.rows import Example
from vigos.errors import ConfigError
from vigos.prompts import DESCRIPTION_OPEN, PromptSpec
from vigos.rollout.hf import HFGenerateRollout, SamplingParams
from vigos.rollout.vllm_server import chat_request, sampling_fields
from vigos.serve.server import PolicyServer, make_server, running


def test_a_well_formed_request_is_answered(url):
    status, answer = post(url, body())
    assert status == 200 and len(answer["choices"]) == 1 and len(answer["choices"][0]["token_ids"]) == 2
    status, answer = post(url, body(), {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, "a charset parameter is allowed"


# --- item 3: content type, origin, API key ---


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_post_that_is_not_json_is_refused(url, content_type):
    # A web page may POST these cross-origin without a preflight; application/json it may not.
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, answer, _ = send(url, "POST", CHAT, json.dumps(body()).encode(), headers)
    assert status == 415
    assert "Content-Type must be application/json" in answer["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Origin": "http://localhost:1"},  # same site, another port: another origin
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_cross_origin_browser_request_is_refused(url, policy, tmp_path, headers):
    status, message = post(url, body(), headers)
    assert status == 403 and "cross-origin request refused" in message
    status, answer, _ = send(
        url,
        "POST",
        "/v1/load_lora_adapter",
        json.dumps({"lora_name": "x", "lora_path": str(tmp_path)}).encode(),
        {**JSON, **headers},
    )
    assert status == 403 and policy.adapters == {}
    assert send(url, "GET", "/v1/models", headers=headers)[0] == 403


def test_the_servers_own_origin_is_taken(url):
    port = urlsplit(url).port
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        assert post(url, body(), {"Origin": origin, "Sec-Fetch-Site": "same-origin"})[0] == 200


def test_an_api_key_is_required_on_every_route_but_health(policy, tmp_path):
    with running(policy, api_key="s3cret-key") as base:
        status, message = post(base, body())
        assert status == 401 and "Authorization: Bearer" in message
        for wrong in (
            "Bearer s3cret-kex",
            "Bearer s3cret-key-longer",
            "s3cret-key",
            "Basic s3cret-key",
            "Bearer ключ".encode(),
        ):
            assert post(base, body(), {"Authorization": wrong})[0] == 401, wrong
        status, answer, response = send(base, "GET", "/v1/models")
        assert status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        status, _, _ = send(
            base,
            "POST",
            "/v1/load_lora_adapter",
            json.dumps({"lora_name": "x", "lora_path": str(tmp_path)}).encode(),
            JSON,
        )
        assert status == 401 and policy.adapters == {}
        assert send(base, "GET", "/health")[0] == 200, "a health check needs no key"
        key = {"Authorization": "Bearer s3cret-key"}
        assert post(base, body(), key)[0] == 200
        assert send(base, "GET", "/v1/models", headers=key)[0] == 200


def test_bad_server_options_are_config_errors(policy):
    with pytest.raises(ConfigError, match=r"api_key \(--api-key\) is empty"):
        make_server(policy, port=0, api_key=" ")
    with pytest.raises(ConfigError, match=r"max_body_mb \(--max-body-mb\) must be > 0"):
        make_server(policy, port=0, max_body_mb=0)
    with pytest.raises(ConfigError, match=r"max_n \(--max-n\) must be at least 1, got 0"):
        PolicyServer(policy.model, policy.processor, model_name="t", max_n=0)
    with pytest.raises(ConfigError, match=r"max_model_len \(--max-model-len\) must be between 1 and .* 32768"):
        PolicyServer(policy.model, policy.processor, model_name="t", max_model_len=40000)


def test_the_cli_takes_the_key_from_the_environment(tiny_model_dir):
    """`vigos serve` end to end: the key from VIGOS_SERVE_API_KEY, the caps from the options."""
    env = {**os.environ, "VIGOS_SERVE_API_KEY": "from-env", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "vigos.cli",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--port",
        "0",
        "--max-body-mb",
        "0.01",
        "--max-n",
        "2",
        "--max-model-len",
        "100",
        "--served-model-name",
        "tiny",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 300)
        line = process.stdout.readline() if ready else "(nothing printed within 300 s)"
        assert "API key required" in line, line
        base = line.split(" at ", 1)[1].split()[0]
        assert post(base, body())[0] == 401
        key = {"Authorization": "Bearer from-env"}
        status, message = post(base, body(n=3), key)
        assert status == 400 and "n must be between 1 and 2 (this server's --max-n), got 3" in message
        status, message = post(base, body(max_tokens=90), key)
        assert status == 400 and "passes the model's context of 100 tokens" in message
        status, message = post(base, body(image=Image.effect_noise((120, 120), 60).convert("RGB")), key)
        assert status == 413 and "--max-body-mb" in message
        assert post(base, body(), key)[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    parsed = build_parser().parse_args(["serve", "--model", "m"])
    assert (parsed.api_key, parsed.max_body_mb, parsed.max_n, parsed.max_model_len) == (None, 64.0, 64, None)


# --- items 4 and 5: the body's size and framing ---


def test_a_body_over_the_cap_is_refused_before_it_is_read(policy):
    with running(policy, max_body_mb=1) as base:
        where = urlsplit(base)
        with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
            # Announces 600 MB and sends none of it: the answer must come without the server waiting for it.
            sock.sendall(
                f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {600 * 2**20}\r\n\r\n".encode()
            )
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer = json.loads(response.read())
        assert response.status == 413 and response.headers["Connection"] == "close"
        assert (
            f"the body is {600 * 2**20} bytes (Content-Length), over this server's cap of {2**20}"
            in answer["error"]["message"]
        )
        # A client waiting for "100 Continue" (curl, for large bodies) gets the refusal instead.
        status, answer, _ = send(
            base, "POST", CHAT, None, {**JSON, "Content-Length": str(2**21), "Expect": "100-continue"}
        )
        assert status == 413 and "--max-body-mb" in answer["error"]["message"]
        assert post(base, body())[0] == 200, "a body under the cap is taken"


@pytest.mark.parametrize(
    "length, status, message",
    [
        (None, 411, "Content-Length is required"),
        ("abc", 400, "Content-Length must be a whole number of bytes, got 'abc'"),
        ("-5", 400, "Content-Length must be a whole number of bytes, got '-5'"),
        ("1e3", 400, "Content-Length must be a whole number of bytes"),
    ],
)
def test_a_bad_content_length_is_a_400_or_411(url, length, status, message):
    headers = {**JSON, **({} if length is None else {"Content-Length": length})}
    got, answer, _ = send(url, "POST", CHAT, b"{}", headers, length=False)
    assert got == status and message in answer["error"]["message"]
    assert send(url, "GET", "/health")[0] == 200, "the server still answers"


def test_a_chunked_body_is_refused(url):
    got, answer, _ = send(
        url, "POST", CHAT, b"2\r\n{}\r\n0\r\n\r\n", {**JSON, "Transfer-Encoding": "chunked"}, length=False
    )
    assert got == 411 and "send the body with a Content-Length" in answer["error"]["message"]


# --- the model's context ---


def test_the_context_caps_prompt_plus_max_tokens(policy):
    prompt_tokens = 24  # the tiny model's student prompt with one 56 x 56 image
    capped = PolicyServer(policy.model, policy.processor, model_name="tiny", max_model_len=prompt_tokens + 5)
    with running(capped) as base:
        status, answer = post(base, body(max_tokens=5, min_tokens=5))
        assert status == 200 and answer["usage"]["prompt_tokens"] == prompt_tokens
        assert len(answer["choices"][0]["token_ids"]) == 5
        status, message = post(base, body(max_tokens=6))
        assert (
            status == 400
            and "max_tokens=6 with the 24-token prompt passes the model's context of 29 tokens: ask for at most 5"
            in message
        )
        assert send(base, "GET", "/v1/models")[1]["data"][0]["max_model_len"] == prompt_tokens + 5
    tight = PolicyServer(policy.model, policy.processor, model_name="tiny", max_model_len=10)
    with running(tight) as base:
        status, message = post(base, body())
        assert status == 400 and "messages: the prompt is 24 tokens, over the model's context of 10" in message


# --- item 4: concurrency ---


def test_a_burst_of_connections_queues_instead_of_being_dropped(policy):
    """50 connections opened before the server accepts any: all are taken and all are answered."""
    server = make_server(policy, "127.0.0.1", 0)
    address = server.server_address
    payload = json.dumps(body()).encode()
    request = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    sockets, thread = [], None
    try:
        for _ in range(50):  # with a listen backlog of 5 the seventh connect waits for an accept that never comes
            sockets.append(socket.create_connection(address, timeout=2))
            sockets[-1].sendall(request)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        statuses = []
        for sock in sockets:
            sock.settimeout(120)
            response = http.client.HTTPResponse(sock)
            response.begin()
            statuses.append((response.status, len(json.loads(response.read())["choices"])))
        assert statuses == [(200, 1)] * 50
    finally:
        for sock in sockets:
            sock.close()
        if thread is not None:  # shutdown() waits for a serve_forever that was started
            server.shutdown()
        server.server_close()


def test_health_and_models_answer_while_a_long_generation_runs(url, policy):
    results = {}
    worker = threading.Thread(target=lambda: results.update(long=post(url, body(max_tokens=3000, min_tokens=3000))))
    worker.start()
    deadline = time.monotonic() + 30
    while not policy._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert policy._lock.locked(), "the long generation started"
    started = time.monotonic()
    assert send(url, "GET", "/health")[0] == 200
    assert send(url, "GET", "/v1/models")[1]["data"][0]["id"] == "tiny"
    answered = time.monotonic() - started
    assert policy._lock.locked(), "the answers came while the generation ran"
    worker.join()
    assert results["long"][0] == 200 and len(results["long"][1]["choices"][0]["token_ids"]) == 3000
    assert answered < 2


# --- item 11 (serve): 16-bit images are scaled to 8 bits, not clipped ---


def test_a_16_bit_png_is_scaled_not_clipped(url, policy):
    gradient = np.linspace(0, 65535, 56 * 56).round().astype(np.uint16).reshape(56, 56)
    sixteen = Image.fromarray(gradient)
    assert sixteen.mode == "I;16"
    scaled = Image.fromarray((gradient / 257).round().astype(np.uint8)).convert("RGB")
    clipped = sixteen.convert("RGB")  # what Pillow's convert makes of it: almost all white
    assert np.mean(np.asarray(clipped) == 255) > 0.99

    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12, num_samples=4)
    fields = sampling_fields(params, seed=11, stop_ids=[], bad_words=[])
    request = chat_request("tiny", "Q?", DESCRIPTION_OPEN, scaled, fields)
    status, served = post(url, with_image_url(request, {"url": png(sixteen)}))
    assert status == 200

    def sampled(image: Image.Image) -> list[list[int]]:
        rollout = HFGenerateRollout(policy.processor, params, PromptSpec("{question}", DESCRIPTION_OPEN))
        with torch.random.fork_rng():
            torch.manual_seed(11)
            return rollout(policy.model, [Example("Q?", "", image)])

    tokens = [choice["token_ids"] for choice in served["choices"]]
    assert tokens == sampled(scaled)
    assert tokens != sampled(clipped), "the clipped image would give other tokens"


def test_the_rollout_client_sends_the_key_from_the_environment(policy, tmp_path, monkeypatch):
    from vigos.rollout.hf import SamplingParams
    from vigos.rollout.vllm_server import RolloutEngineError, VLLMServerRollout

    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, num_samples=1)
    with running(policy, api_key="s3cret-key") as base:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
        monkeypatch.delenv("VIGOS_SERVE_API_KEY", raising=False)
        keyless = VLLMServerRollout(policy.processor, params, url=base, sync_dir=tmp_path, retries=0)
        with pytest.raises(RolloutEngineError, match="401"):
            keyless.client.get("/v1/models")
        monkeypatch.setenv("VLLM_API_KEY", "s3cret-key")
        keyed = VLLMServerRollout(policy.processor, params, url=base, sync_dir=tmp_path, retries=0)
        assert keyed.client.get("/v1/models")["data"][0]["id"]
