"""vLLM rollouts: the server client against vigos's own OpenAI-compatible server serving a tiny model.

The server (`vigos.serve.server`) renders the chat messages with the processor's chat
template, as vLLM does, and samples with the Hugging Face rollout seeded by the
request's seed, so the client's output can be compared token for token with
sampling in-process. Failure handling runs against small stub servers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest
import torch
from PIL import Image

from http_stub import serving
from train_args import tiny_run_args
from vigos.cli import build_parser
from vigos.data.examples import ExampleDataset
from vigos.data.rows import Example
from vigos.models.loading import load_model_and_processor
from vigos.prompts import DESCRIPTION_OPEN, STUDENT_PROMPT, PromptSpec
from vigos.rollout.hf import HFGenerateRollout, SamplingParams, student_contexts, vision_token_ids
from vigos.rollout.vllm_server import (
    RolloutEngineError,
    ServerRefused,
    VLLMServerRollout,
    chat_request,
    request_seeds,
    response_cap,
    sampling_fields,
)
from vigos.serve.command import serve_command
from vigos.serve.server import PolicyServer, running
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import apply_lora

PARAMS = SamplingParams(temperature=1.1, top_p=0.95, top_k=20, max_new_tokens=12, num_samples=2, min_new_tokens=2)
STUDENT = PromptSpec(STUDENT_PROMPT, DESCRIPTION_OPEN)


def examples() -> list[Example]:
    return [
        Example("What colour is the square?", "red", Image.new("RGB", (112, 84), (220, 30, 30)), row=0),
        Example("What colour is the disc?", "blue", Image.new("RGB", (84, 112), (30, 30, 220)), row=1),
        # Two images in one row: sent as two image parts, in order.
        Example(
            "Which picture is green?",
            "second",
            [Image.new("RGB", (56, 56), (220, 30, 30)), Image.new("RGB", (84, 56), (30, 200, 30))],
            row=2,
        ),
    ]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    """vigos's server on 127.0.0.1 (a free port), with its own copy of the tiny model."""
    model, processor = load_model_and_processor(str(tiny_model_dir))
    policy = PolicyServer(model.eval(), processor, model_name="tiny")
    with running(policy) as url:
        yield url, policy


def client(url: str, processor, tmp_path, **kw) -> VLLMServerRollout:
    return VLLMServerRollout(processor, kw.pop("params", PARAMS), STUDENT, url=url, sync_dir=tmp_path / "sync", **kw)


def in_process(model, processor, params: SamplingParams, seed: int) -> list[list[int]]:
    """What the Hugging Face rollout samples for the examples with the seeds a client call draws from ``seed``."""
    torch.manual_seed(seed)
    seeds = request_seeds(len(examples()))
    out = []
    for example, request_seed in zip(examples(), seeds):
        torch.manual_seed(request_seed)
        out.extend(HFGenerateRollout(processor, params, STUDENT)(model, [example]))
    return out


def test_server_rollout_equals_the_hf_rollout(server, tiny_model_and_processor, tmp_path):
    url, _ = server
    model, processor = tiny_model_and_processor
    rollout = client(url, processor, tmp_path)
    torch.manual_seed(3)
    completions = rollout(model, examples())
    assert completions == in_process(model, processor, PARAMS, 3)
    assert len(completions) == len(examples()) * PARAMS.num_samples
    eos = set(rollout.stop_ids)
    for ids in completions:  # up to and including EOS, as the HF rollout returns them
        assert PARAMS.min_new_tokens <= len(ids) <= PARAMS.max_new_tokens
        assert not eos & set(ids[:-1]) and not set(vision_token_ids(processor)) & set(ids)
    torch.manual_seed(3)
    assert rollout(model, examples()) == completions, "the same torch seed sends the same request seeds"


def test_served_prompt_is_the_student_prompt(server, tiny_model_and_processor):
    url, _ = server
    _, processor = tiny_model_and_processor
    rollout = VLLMServerRollout(processor, PARAMS, STUDENT, url=url, sync_dir="unused")
    example = examples()[0]
    body = chat_request(
        "tiny",
        STUDENT.text(example.question),
        STUDENT.prefill,
        example.image,
        sampling_fields(PARAMS, seed=0, stop_ids=rollout.stop_ids, bad_words=rollout.bad_words),
    )
    response = rollout.client.post("/v1/chat/completions", body)
    assert response["prompt_token_ids"] == student_contexts(processor, [example], STUDENT)[0].prompt_ids


def test_request_maps_sampling_params_one_to_one(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=33, num_samples=3, min_new_tokens=5)
    fields = sampling_fields(params, seed=7, stop_ids=[1, 2], bad_words=["<|image_pad|>"])
    assert fields == {
        "n": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "max_tokens": 33,
        "min_tokens": 5,
        "seed": 7,
        "stop_token_ids": [1, 2],
        "bad_words": ["<|image_pad|>"],
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_p": 0.0,
    }
    image = Image.new("RGB", (30, 20), (1, 2, 3))
    body = chat_request("m", "Q?", DESCRIPTION_OPEN, image, fields)
    assert body["continue_final_message"] and not body["add_generation_prompt"] and body["return_token_ids"]
    assert body["messages"][1] == {"role": "assistant", "content": DESCRIPTION_OPEN}
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert list(decoded.getdata()) == list(image.getdata())
    # vLLM masks a one-token bad word: each vision placeholder must be one token of its own.
    rollout = VLLMServerRollout(processor, params, STUDENT, url="http://unused", sync_dir="unused")
    ids = [processor.tokenizer.encode(word, add_special_tokens=False) for word in rollout.bad_words]
    assert ids == [[i] for i in vision_token_ids(processor)]


def test_lora_hot_load_changes_the_served_policy(server, tiny_model_and_processor, tiny_model_dir, tmp_path):
    url, policy = server
    model, processor = tiny_model_and_processor
    rollout = client(url, processor, tmp_path)
    torch.manual_seed(5)
    base = rollout(model, examples())

    adapted, _ = load_model_and_processor(str(tiny_model_dir))
    config = ViGOSConfig(output_dir=str(tmp_path), report_to="none", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    adapted = apply_lora(adapted, config).eval()
    with torch.no_grad():
        for name, weight in adapted.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    rollout.sync(adapted)
    assert rollout.adapter == "vigos-policy-1" and list(policy.adapters) == ["vigos-policy-1"]
    cards = rollout.client.get("/v1/models")["data"]
    assert [(c["id"], c["parent"]) for c in cards] == [("tiny", None), ("vigos-policy-1", "tiny")]
    torch.manual_seed(5)
    served = rollout(adapted, examples())
    assert served != base
    assert served == in_process(adapted, processor, PARAMS, 5), "the server samples the adapter's exact policy"

    rollout.sync(adapted)  # a new name; the previous adapter is unloaded and its files removed
    assert list(policy.adapters) == ["vigos-policy-2"]
    assert [p.name for p in (tmp_path / "sync").iterdir()] == ["vigos-policy-2"]
    rollout.unload_adapter("vigos-policy-2")
    rollout.adapter = None
    torch.manual_seed(5)
    assert rollout(model, examples()) == base, "after the unload the server samples the base model again"


def test_server_refuses_what_it_cannot_honour(server, tiny_model_and_processor, tmp_path):
    url, _ = server
    _, processor = tiny_model_and_processor
    rollout = client(url, processor, tmp_path)
    example = examples()[0]
    body = chat_request(
        "tiny",
        "Q?",
        DESCRIPTION_OPEN,
        example.image,
        sampling_fields(PARAMS, seed=0, stop_ids=rollout.stop_ids, bad_words=[]),
    )
    with pytest.raises(ServerRefused, match="HTTP 400: logit_bias="):
        rollout.client.post("/v1/chat/completions", {**body, "logit_bias": {"5": -100}})
    with pytest.raises(ServerRefused, match="HTTP 404: The model `nope` does not exist"):
        rollout.client.post("/v1/chat/completions", {**body, "model": "nope"})
    with pytest.raises(ServerRefused, match="HTTP 404: .*no adapter_config.json"):
        rollout.load_adapter("a", tmp_path)
    with pytest.raises(ServerRefused, match="HTTP 404: The lora adapter 'a' cannot be found"):
        rollout.unload_adapter("a")
    rollout.unload_adapter("a", missing_ok=True)


def test_a_different_chat_template_is_caught(server, tiny_model_and_processor, tiny_model_dir, tmp_path):
    """A server rendering the messages with another template (e.g. vllm serve --chat-template) is an error."""
    _, policy = server
    model, processor = tiny_model_and_processor
    other = load_model_and_processor(str(tiny_model_dir))[1]
    other.chat_template = "{{ 'You are a lighthouse.' }}" + other.chat_template
    with running(PolicyServer(policy.model, other, model_name="tiny")) as url:
        with pytest.raises(RolloutEngineError, match="built a different student prompt.*--chat-template"):
            client(url, processor, tmp_path)(model, examples())


@contextmanager
def stub(answer):
    """A server whose every request is answered by ``answer(handler, attempt, body)``; yields (url, bodies seen)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            status, payload = answer(len(seen), body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except BrokenPipeError:  # the client gave up (the timeout test)
                pass

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        yield url, seen


def test_a_5xx_is_retried(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    eos = processor.tokenizer.eos_token_id
    params = SamplingParams(num_samples=1, max_new_tokens=4)

    def answer(attempt, body):
        if attempt == 1:
            return 503, {"error": {"message": "warming up"}}
        return 200, {"choices": [{"index": 0, "token_ids": [5, eos, 7]}]}

    with stub(answer) as (url, seen):
        rollout = client(url, processor, tmp_path, params=params, served_model="m", backoff=0.01)
        assert rollout(torch.nn.Linear(1, 1), examples()[:1]) == [[5, eos]]
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0]["model"] == "m" and seen[0]["n"] == 1 and seen[0]["max_tokens"] == 4


def test_a_4xx_is_not_retried_and_names_the_fix(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    with stub(lambda attempt, body: (404, {"detail": "Not Found"})) as (url, seen):
        rollout = client(url, processor, tmp_path, backoff=0.01)
        with pytest.raises(
            ServerRefused, match="load_lora_adapter: HTTP 404: Not Found.*VLLM_ALLOW_RUNTIME_LORA_UPDATING"
        ):
            rollout.load_adapter("a", tmp_path)
    assert len(seen) == 1


def test_a_timeout_is_a_clear_error(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor

    def answer(attempt, body):
        time.sleep(1.5)
        return 200, {}

    with stub(answer) as (url, seen):
        rollout = client(url, processor, tmp_path, served_model="m", timeout=0.3)
        with pytest.raises(
            RolloutEngineError, match=r"chat/completions got no complete answer within 0.3 s.*vllm_request_timeout"
        ):
            rollout(torch.nn.Linear(1, 1), examples()[:1])
    assert len(seen) == 1, "a timed-out generation is not sent again"


@contextmanager
def raw_stub(respond):
    """A server whose every request (GET or POST) is answered by ``respond(handler, stop)``; yields (url, paths)."""
    seen: list[str] = []
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            try:
                respond(self, stop)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, at its deadline or its cap

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.do_GET()

        def log_message(self, *args):
            pass

    with serving(Handler, stop) as url:
        yield url, seen


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_not_followed(tiny_model_and_processor, tmp_path, status):
    """Followed, a 302 would turn the POST into a bodiless GET elsewhere, a 307 would send it there whole."""
    _, processor = tiny_model_and_processor

    def redirect_to(target):
        def respond(handler, stop):
            handler.send_response(status)
            handler.send_header("Location", target + "/v1/chat/completions")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        return respond

    with raw_stub(lambda handler, stop: None) as (elsewhere, reached), raw_stub(redirect_to(elsewhere)) as (url, seen):
        rollout = client(url, processor, tmp_path, served_model="m", backoff=0.01)
        with pytest.raises(
            RolloutEngineError,
            match=rf"HTTP {status}, a redirect to {elsewhere}/v1/chat/completions, "
            r"which is not followed.*vllm_server_url",
        ):
            rollout(torch.nn.Linear(1, 1), examples()[:1])
    assert reached == [] and len(seen) == 1


def test_a_trickling_server_is_cut_at_the_deadline(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor

    def trickle(handler, stop):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        while not stop.wait(0.5):  # a byte every 0.5 s: no single read waits as long as the 1 s timeout
            handler.wfile.write(b" ")
            handler.wfile.flush()

    with raw_stub(trickle) as (url, seen):
        rollout = client(url, processor, tmp_path, served_model="m", timeout=1.0)
        start = time.monotonic()
        with pytest.raises(RolloutEngineError, match=r"got no complete answer within 1 s, the deadline of one request"):
            rollout(torch.nn.Linear(1, 1), examples()[:1])
        assert time.monotonic() - start < 2.0
    assert len(seen) == 1


def test_an_answer_is_read_up_to_a_cap_sized_for_the_samples(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    eos = processor.tokenizer.eos_token_id
    # 17 MiB of valid answer: two samples with a long text, sent without a length (HTTP/1.0, ends at close).
    pad = "x" * (17 * 2**20)
    body = json.dumps(
        {"choices": [{"index": i, "token_ids": [5, eos], "message": {"content": pad}} for i in range(2)]}
    ).encode()

    def large(handler, stop):
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body)

    small = SamplingParams(num_samples=2, max_new_tokens=4)
    long = SamplingParams(num_samples=2, max_new_tokens=100_000)
    assert response_cap(small) < len(body) < response_cap(long)
    with raw_stub(large) as (url, seen):
        rollout = client(url, processor, tmp_path, params=small, served_model="m")
        assert rollout.client.max_response_bytes == response_cap(small)
        with pytest.raises(RolloutEngineError, match=r"chat/completions: the answer is larger than the 16\.0 MiB"):
            rollout(torch.nn.Linear(1, 1), examples()[:1])
        assert len(seen) == 1, "an oversized answer is not asked for again"
        assert client(url, processor, tmp_path, params=long, served_model="m").sample(examples()[:1], [0]) == [
            [5, eos],
            [5, eos],
        ], "a long generation's answer fits its larger cap"


def test_an_unreachable_server_is_a_clear_error(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    rollout = client(url, processor, tmp_path, retries=1, backoff=0.01)
    with pytest.raises(RolloutEngineError, match=rf"failed 2 times.*No vLLM server answers at {url}.*vllm serve"):
        rollout(torch.nn.Linear(1, 1), examples()[:1])


def test_config_builds_the_named_engine(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    make = lambda **kw: ViGOSConfig(output_dir=str(tmp_path), report_to="none", **kw)  # noqa: E731
    assert isinstance(make().build_rollout(processor), HFGenerateRollout)
    served = make(rollout_engine="vllm_server", vllm_server_url="http://h:1", vllm_request_timeout=9).build_rollout(
        processor
    )
    assert isinstance(served, VLLMServerRollout)
    assert (served.client.url, served.client.timeout, served.sync_dir) == ("http://h:1", 9, tmp_path / "vllm-policy")
    with pytest.raises(RolloutEngineError, match=r"needs vLLM: install the vllm extra \(pip install 'vigos\[vllm\]'\)"):
        make(rollout_engine="vllm_colocate").build_rollout(processor, model_path="x")


def test_serve_subcommand():
    args = build_parser().parse_args(["serve", "--model", "tiny:qwen2_5_vl", "--port", "0"])
    assert args.handler is serve_command and (args.host, args.port) == ("127.0.0.1", 0)


@pytest.mark.slow
@pytest.mark.parametrize("every, requested, last", [(1, [1, 1, 2, 2], 3), (2, [1, 1, 1, 1], 2)])
def test_trainer_syncs_the_adapter(tiny_model_dir, tmp_path, caplog, every, requested, last):
    from peft import get_peft_model_state_dict

    from vigos.training.trainer import ViGOSTrainer

    model, processor = load_model_and_processor(str(tiny_model_dir))
    served_model, served_processor = load_model_and_processor(str(tiny_model_dir))
    policy = PolicyServer(served_model.eval(), served_processor, model_name="tiny")
    args = tiny_run_args(
        tmp_path / "out",
        max_grad_norm=1.0,
        max_completion_length=12,
        num_generations=2,
        rollout_engine="vllm_server",
        vllm_sync_steps=every,
    )
    torch.manual_seed(0)
    model = apply_lora(model, args)
    caplog.set_level(logging.INFO, logger="vigos")
    with running(policy) as url:
        args.vllm_server_url = url
        # Two rows: one full batch per step, so each step sends one request per row.
        trainer = ViGOSTrainer(model, args, ExampleDataset(examples()[:2]), processor)
        assert isinstance(trainer.rollout, VLLMServerRollout)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    seen = [r.args[0] for r in caplog.records if r.name == "vigos.serve.server" and r.msg.startswith("chat completion")]
    # One request per example per step. The first rollout syncs; then every `every` optimizer steps.
    assert seen == [f"vigos-policy-{n}" for n in requested]
    assert list(policy.adapters) == [f"vigos-policy-{last}"], "the older adapters are unloaded"
    served = get_peft_model_state_dict(policy.model, adapter_name=f"vigos-policy-{last}")
    trained = get_peft_model_state_dict(model)
    assert served.keys() == trained.keys()
    assert all(torch.equal(served[k], trained[k]) for k in trained), "the server holds the trained adapter"
