"""The judge client against a real chat-completions server on 127.0.0.1, started by each test."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigos.eval.judge import JudgeClient, JudgeConfig, JudgeError, parse_verdict

KEY_ENV = "VIGOS_TEST_JUDGE_KEY"
MATCH = "MATCHING-ANSWER"
# The longest a handler may be kept waiting; teardown releases it at once.
MAX_HOLD_S = 5.0


class FakeJudge:
    """A chat-completions server whose next answers are scripted by the test.

    ``script`` holds one action per request, taken in order; when it is empty
    the server replies "Yes." if the user message contains ``MATCH`` and "No"
    otherwise. Actions: ``("status", code)``, ``("raw", bytes)``,
    ``("reply", text)``, ``("sleep", seconds)`` (then the default reply),
    ``("redirect", (status, location))``, ``("trickle", seconds)`` (the
    default reply, a byte every ``seconds``), ``("endless", None)`` (an answer
    without a length that goes on until the client hangs up).
    """

    def __init__(self) -> None:
        self.script: list[tuple[str, Any]] = []
        self.hold_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                judge.handle(self)

            def do_GET(self) -> None:  # what a followed 302 turns the POST into
                with judge._lock:
                    judge.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
                judge._send(self, 200, json.dumps(completion("Yes.")).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        with self._lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": json.loads(body)})
            action = self.script.pop(0) if self.script else ("default", None)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold_s:
                self.release.wait(self.hold_s)
            kind, value = action
            if kind == "sleep":
                self.release.wait(min(value, MAX_HOLD_S))
            if kind in ("redirect", "trickle", "endless"):
                getattr(self, "_" + kind)(handler, value)
                return
            if kind == "status":
                status, payload = value, json.dumps({"error": {"message": f"scripted {value}"}}).encode()
            elif kind == "raw":
                status, payload = 200, value
            else:
                user = json.loads(body)["messages"][-1]["content"]
                text = value if kind == "reply" else ("Yes." if MATCH in user else "No")
                status, payload = 200, json.dumps(completion(text)).encode()
        finally:
            # Counted out before answering: the client may send its next request as soon as it has
            # the answer, possibly before this thread would get to run a later decrement.
            with self._lock:
                self.in_flight -= 1
        try:
            self._send(handler, status, payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out) before the answer

    def _redirect(self, handler: BaseHTTPRequestHandler, target: tuple[int, str]) -> None:
        status, location = target
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _trickle(self, handler: BaseHTTPRequestHandler, every_s: float) -> None:
        payload = json.dumps(completion("Yes.")).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        try:
            for byte in payload:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                if self.release.wait(every_s):
                    return
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up at its deadline

    def _endless(self, handler: BaseHTTPRequestHandler, _: None) -> None:
        handler.send_response(200)  # HTTP/1.0 and no Content-Length: the body ends when the connection does
        handler.end_headers()
        try:
            while not self.release.is_set():
                handler.wfile.write(b" " * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its cap

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
def server() -> Iterator[FakeJudge]:
    fake = FakeJudge()
    yield fake
    fake.close()


@pytest.fixture
def config_for(monkeypatch) -> Callable[..., JudgeConfig]:
    monkeypatch.delenv(KEY_ENV, raising=False)

    def make(base_url: str, **overrides: Any) -> JudgeConfig:
        settings = {
            "model": "judge-model",
            "api_key_env": KEY_ENV,
            "timeout_s": 2.0,
            "max_retries": 2,
            "backoff_s": 0.01,
            "concurrency": 2,
        }
        settings.update(overrides)
        return JudgeConfig(base_url=base_url, **settings)

    return make


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- verdicts and the request --------------------------------------------------------------------


def test_yes_and_no_verdicts(server, config_for):
    with JudgeClient(config_for(server.base_url)) as client:
        assert client.judge("What is 2+2?", "4", f"so the answer is 4 {MATCH}") is True
        assert client.judge("What is 2+2?", "4", "the answer is 5") is False
    assert server.count == 2


def test_request_follows_the_chat_completions_schema(server, config_for, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    with JudgeClient(config_for(server.base_url + "/", max_tokens=8)) as client:
        client.judge("Which colour is the ball?", "red", "\\boxed{crimson}")
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert body["model"] == "judge-model"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 8
    assert [message["role"] for message in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    for part in ("Which colour is the ball?", "red", "\\boxed{crimson}", "yes or no"):
        assert part in user


def test_no_authorization_header_without_a_key(server, config_for):
    with JudgeClient(config_for(server.base_url)) as client:
        client.judge("q", "a", "a")
    assert "Authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("yes", True),
        ("Yes.", True),
        ("**No**", False),
        ("NO", False),
        ("The answer is yes", True),
        ("<think>yes or no? it differs</think>No", False),
        ("No, they differ; yes would be wrong", False),
    ],
)
def test_parse_verdict_cases(reply, verdict):
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize("reply", ["", "Maybe", "yesterday", "nobody knows", "<think>yes</think>"])
def test_parse_verdict_none(reply):
    assert parse_verdict(reply) is None


@given(
    st.text(alphabet="abcdefghijklmopqrstuvwxz .,!:*\n", max_size=30),
    st.sampled_from(["yes", "no", "Yes", "NO"]),
    st.text(max_size=30),
)
def test_parse_verdict_first_word_wins(before, word, after):
    assert parse_verdict(f"{before} {word} {after}") is (word.lower() == "yes")


# --- the cache ------------------------------------------------------------------------------------


def test_cache_answers_without_a_request(server, config_for, tmp_path):
    cache = tmp_path / "cache" / "judge.sqlite"
    config = config_for(server.base_url, cache_path=str(cache))
    with JudgeClient(config) as client:
        assert client.judge("q", "4", f"4 {MATCH}") is True
        assert client.judge("q", "4", f"4 {MATCH}") is True
        assert client.stats == {"requests": 1, "cache_hits": 1}
    assert server.count == 1
    # A new client (a re-run) on the same file asks nothing, even in bulk with duplicates.
    with JudgeClient(config) as client:
        assert client.judge_many([("q", "4", f"4 {MATCH}")] * 5) == [True] * 5
    assert server.count == 1
    # Another judge model is another key.
    with JudgeClient(config_for(server.base_url, cache_path=str(cache), model="other")) as client:
        client.judge("q", "4", f"4 {MATCH}")
    assert server.count == 2


def test_judge_many_keeps_order_and_asks_duplicates_once(server, config_for, tmp_path):
    items = [("q", "ref", f"r{i} {MATCH}" if i % 3 == 0 else f"r{i}") for i in range(9)]
    items += items[:3]
    with JudgeClient(config_for(server.base_url, cache_path=str(tmp_path / "c.sqlite"))) as client:
        verdicts = client.judge_many(items)
    assert verdicts == [i % 3 == 0 for i in range(9)] + [True, False, False]
    assert server.count == 9


def test_concurrency_limit_is_respected(server, config_for):
    server.hold_s = 0.1
    items = [("q", "ref", f"response {i}") for i in range(8)]
    with JudgeClient(config_for(server.base_url, concurrency=3)) as client:
        assert client.judge_many(items) == [False] * 8
        # Threads of the caller's own share the same limit.
        threads = [threading.Thread(target=client.judge, args=("q", "ref", f"other {i}")) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert server.count == 14
    assert server.max_in_flight == 3


# --- failures -------------------------------------------------------------------------------------


def test_server_errors_are_retried(server, config_for):
    server.script = [("status", 500), ("status", 503)]
    with JudgeClient(config_for(server.base_url, max_retries=2)) as client:
        assert client.judge("q", "a", MATCH) is True
    assert server.count == 3


def test_rate_limit_is_retried(server, config_for):
    server.script = [("status", 429)]
    with JudgeClient(config_for(server.base_url, max_retries=1)) as client:
        assert client.judge("q", "a", "b") is False
    assert server.count == 2


def test_persistent_server_errors_end_in_judge_error(server, config_for):
    server.script = [("status", 500)] * 3
    with (
        JudgeClient(config_for(server.base_url, max_retries=2)) as client,
        pytest.raises(JudgeError, match=r"failed 3 times; last failure: HTTP 500"),
    ):
        client.judge("q", "a", "b")
    assert server.count == 3


def test_timeout_is_retried_then_judge_error(server, config_for):
    server.script = [("sleep", MAX_HOLD_S)] * 3
    start = time.monotonic()
    with (
        JudgeClient(config_for(server.base_url, timeout_s=0.2, max_retries=2)) as client,
        pytest.raises(JudgeError) as failure,
    ):
        client.judge("q", "a", "b")
    assert time.monotonic() - start < 3.0
    assert server.count == 3
    message = str(failure.value)
    assert server.base_url + "/chat/completions" in message and "no complete answer within 0.2 s" in message


def test_a_trickling_judge_is_cut_at_the_deadline(server, config_for):
    """Every byte comes well within the timeout of a single read; the deadline bounds the request as a whole."""
    server.script = [("trickle", 0.5)] * 2
    start = time.monotonic()
    with (
        JudgeClient(config_for(server.base_url, timeout_s=1.0, max_retries=1)) as client,
        pytest.raises(JudgeError, match=r"failed 2 times; last failure: no complete answer within 1 s, the dead"),
    ):
        client.judge("q", "a", MATCH)
    assert time.monotonic() - start < 2 * 1.0 + 1.0
    assert server.count == 2


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_not_followed_with_the_key(server, config_for, monkeypatch, status):
    monkeypatch.setenv(KEY_ENV, "sk-secret-123")
    elsewhere = FakeJudge()
    try:
        server.script = [("redirect", (status, elsewhere.base_url + "/chat/completions"))]
        with JudgeClient(config_for(server.base_url, max_retries=3)) as client, pytest.raises(JudgeError) as failure:
            client.judge("q", "a", MATCH)
    finally:
        elsewhere.close()
    assert elsewhere.requests == [], "the other host got no request, so never saw the key"
    assert server.count == 1, "a redirect is not retried"
    message = str(failure.value)
    assert f"HTTP {status}, a redirect to {elsewhere.base_url}/chat/completions, which is not followed" in message
    assert KEY_ENV in message and "--judge-url" in message and "sk-secret" not in message


def test_an_oversized_answer_is_refused(server, config_for, tmp_path):
    server.script = [("endless", None)]
    with (
        JudgeClient(config_for(server.base_url, cache_path=str(tmp_path / "c.sqlite"))) as client,
        pytest.raises(JudgeError, match=r"larger than the 4 MiB cap.*--judge-url names a chat-completions"),
    ):
        client.judge("q", "a", MATCH)
    assert server.count == 1, "a server that sends megabytes for a verdict would do it again"


def test_messages_show_the_url_without_credentials(config_for):
    url = f"http://judge-user:hunter2@127.0.0.1:{free_port()}/v1"
    with JudgeClient(config_for(url, max_retries=0)) as client, pytest.raises(JudgeError) as failure:
        client.judge("q", "a", "b")
    message = str(failure.value)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}/chat/completions" in message
    assert "hunter2" not in message and "judge-user" not in message


def test_timeout_then_answer_succeeds(server, config_for):
    server.script = [("sleep", MAX_HOLD_S)]
    with JudgeClient(config_for(server.base_url, timeout_s=0.2, max_retries=1)) as client:
        assert client.judge("q", "a", MATCH) is True
    assert server.count == 2


def test_malformed_json_is_a_judge_error(server, config_for):
    server.script = [("raw", b'{"choices": [{"message": ')] * 3
    with (
        JudgeClient(config_for(server.base_url, max_retries=2)) as client,
        pytest.raises(JudgeError, match="malformed JSON") as failure,
    ):
        client.judge("q", "a", "b")
    assert server.base_url in str(failure.value)
    assert server.count == 3


def test_malformed_json_once_then_answer_succeeds(server, config_for):
    server.script = [("raw", b"<html>bad gateway</html>")]
    with JudgeClient(config_for(server.base_url, max_retries=1)) as client:
        assert client.judge("q", "a", MATCH) is True


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"error": {"message": "overloaded"}}', "no 'choices'"),
        (b'{"choices": []}', "no 'choices'"),
        (b'{"choices": [{"message": {"role": "assistant", "content": null}}]}', "content is not text"),
    ],
)
def test_missing_choices_is_a_judge_error(server, config_for, payload, match):
    server.script = [("raw", payload)] * 2
    with JudgeClient(config_for(server.base_url, max_retries=1)) as client, pytest.raises(JudgeError, match=match):
        client.judge("q", "a", "b")
    assert server.count == 2


def test_reply_without_a_verdict_is_a_judge_error(server, config_for):
    server.script = [("reply", "I cannot tell.")] * 2
    with (
        JudgeClient(config_for(server.base_url, max_retries=1)) as client,
        pytest.raises(JudgeError, match="neither yes nor no"),
    ):
        client.judge("q", "a", "b")


def test_unauthorized_is_not_retried_and_names_the_key_variable(server, config_for):
    server.script = [("status", 401)]
    with JudgeClient(config_for(server.base_url, max_retries=3)) as client, pytest.raises(JudgeError, match=KEY_ENV):
        client.judge("q", "a", "b")
    assert server.count == 1


def test_not_found_points_at_the_url(server, config_for):
    server.script = [("status", 404)]
    with JudgeClient(config_for(server.base_url)) as client, pytest.raises(JudgeError, match="HTTP 404.*--judge-url"):
        client.judge("q", "a", "b")
    assert server.count == 1


def test_unreachable_endpoint(config_for):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with JudgeClient(config_for(url, max_retries=1)) as client, pytest.raises(JudgeError) as failure:
        client.judge("q", "a", "b")
    message = str(failure.value)
    assert message.startswith(f"could not reach the judge at {url}/chat/completions")
    assert "start the server or fix --judge-url" in message


def test_judge_many_stops_on_the_first_failure(config_for):
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with (
        JudgeClient(config_for(url, max_retries=1, concurrency=2)) as client,
        pytest.raises(JudgeError, match="could not reach"),
    ):
        client.judge_many([("q", "a", f"r{i}") for i in range(200)])
    assert time.monotonic() - start < 5.0
    assert client.stats["requests"] < 20


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "http://"),
        ({"model": ""}, "model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_config_rejects_bad_settings(overrides, match):
    settings = {"base_url": "http://127.0.0.1:8000/v1", "model": "m"} | overrides
    with pytest.raises(ValueError, match=match):
        JudgeConfig(**settings)
