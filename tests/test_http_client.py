"""The API clients' HTTP request against real servers on 127.0.0.1: redirects, deadlines, size caps."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from http_stub import serving as run_server
from vigos.http_client import DeadlineExceeded, RedirectRefused, ResponseTooLarge, redact_url, request

Respond = Callable[[BaseHTTPRequestHandler, threading.Event], None]


@contextmanager
def serving(respond: Respond) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server answering every request with ``respond(handler, stop)``; yields (base URL, headers of each request)."""
    seen: list[dict[str, str]] = []
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            try:
                respond(self, stop)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.do_GET()

    with run_server(Handler, stop) as url:
        yield url, seen


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def trickle_body(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Headers at once, then a byte of a 100-byte body every 0.5 s."""
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    for _ in range(100):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        if stop.wait(0.5):
            return


def trickle_headers(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """The status line, then a byte of one endless header every 0.5 s: no single read ever times out."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.5):
        handler.wfile.write(b"a")
        handler.wfile.flush()


def ok(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    send(handler, 200, b'{"ok": true}')


def test_an_answer_comes_back_whole_with_its_status():
    with serving(ok) as (url, seen):
        answer = request(
            url + "/v1/x", method="POST", data=b"{}", headers={"Authorization": "Bearer k"}, deadline_s=5, max_bytes=100
        )
    assert (answer.status, answer.body) == (200, b'{"ok": true}')
    assert seen[0]["Authorization"] == "Bearer k"
    with serving(lambda handler, stop: send(handler, 503, b"busy")) as (url, _):
        answer = request(url, deadline_s=5, max_bytes=100)
    assert (answer.status, answer.body) == (503, b"busy"), "an error status is the caller's to judge"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_credentials_stay_home(status):
    with (
        serving(ok) as (elsewhere, reached),
        serving(lambda handler, stop: send(handler, status, b"", Location=elsewhere + "/steal?token=abc")) as (url, _),
        pytest.raises(RedirectRefused) as refused,
    ):
        request(
            url + "/v1/chat/completions",
            method="POST",
            data=b"{}",
            headers={"Authorization": "Bearer sk-secret"},
            deadline_s=5,
            max_bytes=1000,
        )
    assert reached == [], "the redirect target got no request, so no Authorization header"
    message = str(refused.value)
    assert f"HTTP {status}, a redirect to {elsewhere}/steal" in message and "not followed" in message
    assert "credentials" in message and "abc" not in message
    assert refused.value.status == status and refused.value.location == elsewhere + "/steal"


def test_a_relative_redirect_names_the_absolute_target():
    with (
        serving(lambda handler, stop: send(handler, 302, b"", Location="/other")) as (url, _),
        pytest.raises(RedirectRefused, match=f"a redirect to {url}/other;"),
    ):
        request(url + "/v1/x", deadline_s=5, max_bytes=100)


@pytest.mark.parametrize("respond", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickling_server_is_cut_at_the_deadline(respond):
    with serving(respond) as (url, _):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"no complete answer within the 1\.2 s deadline") as late:
            request(url, deadline_s=1.2, max_bytes=1000)
        took = time.monotonic() - start
    # Each byte comes well within a socket timeout of 1.2 s; only the deadline over the whole request ends it.
    assert 1.1 < took < 2.0
    assert late.value.deadline_s == 1.2 and url in str(late.value)


def test_a_silent_server_is_cut_at_the_deadline():
    with serving(lambda handler, stop: stop.wait(10)) as (url, _):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            request(url, deadline_s=0.5, max_bytes=1000)
        assert time.monotonic() - start < 1.5


def test_a_body_over_the_cap_is_refused_by_its_declared_length():
    with (
        serving(lambda handler, stop: send(handler, 200, b"x" * 5000)) as (url, _),
        pytest.raises(ResponseTooLarge, match=f"from {url} is larger than the 4096 byte cap"),
    ):
        request(url, deadline_s=5, max_bytes=4096)


def test_a_body_without_a_length_is_refused_once_past_the_cap():
    def endless(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.protocol_version = "HTTP/1.0"  # no length: the body ends when the connection closes
        handler.send_response(200)
        handler.end_headers()
        while not stop.is_set():
            handler.wfile.write(b"y" * 65536)

    with serving(endless) as (url, _):
        start = time.monotonic()
        with pytest.raises(ResponseTooLarge, match="larger than the 1 MiB cap"):
            request(url, deadline_s=30, max_bytes=2**20)
        assert time.monotonic() - start < 10


def test_a_body_cut_short_is_an_error():
    def short(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "50")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b"only ten b")
        handler.close_connection = True

    with serving(short) as (url, _), pytest.raises(http.client.IncompleteRead, match="10 bytes read, 40 more expected"):
        request(url, deadline_s=5, max_bytes=1000)


def test_nothing_listening_is_a_url_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(urllib.error.URLError):
        request(f"http://127.0.0.1:{port}/v1", deadline_s=5, max_bytes=100)


def test_only_http_urls():
    with pytest.raises(ValueError, match="http:// or https://"):
        request("file:///etc/passwd", deadline_s=1, max_bytes=100)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://user:pa%3Ass@judge.example.com:8443/v1/", "https://judge.example.com:8443/v1/"),
        ("https://tok@judge.example.com/v1", "https://judge.example.com/v1"),
        (
            "https://h/v1?api_key=sk-1&api-version=2024-02&access_token=t&sig=s#token=f",
            "https://h/v1?api-version=2024-02",
        ),
        ("http://h:9/v1?KEY=1&X-Amz-Credential=c&password=p&model=m", "http://h:9/v1?model=m"),
    ],
)
def test_redact_url_keeps_the_address_and_drops_credentials(url, kept):
    assert redact_url(url) == kept
