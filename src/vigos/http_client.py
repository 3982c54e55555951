"""One HTTP request for the API clients (the LLM judge, the vLLM server): no redirects, a deadline, a size cap.

The judge sends an API key and both clients POST bodies, so a redirect is
never followed: a 3xx answer is :class:`RedirectRefused`, naming where it
pointed. A socket timeout bounds each read, not the request, so a server
trickling a byte at a time could hold a request for ever; here a watchdog
shuts the socket down when the deadline passes, which bounds the connect,
the send, the headers and the body together (:class:`DeadlineExceeded`).
The body is read in chunks and refused past ``max_bytes``
(:class:`ResponseTooLarge`), so a runaway server cannot fill the memory.

Any HTTP status comes back as an :class:`Answer`; the caller decides what a
4xx or 5xx means. Connection failures propagate as urllib and http.client
raise them: :class:`urllib.error.URLError` when no connection was made,
:class:`OSError` or :class:`http.client.HTTPException` when it broke.
Proxies from the environment are honoured, as ``urllib.request.urlopen`` does.
"""

from __future__ import annotations

import functools
import http.client
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

__all__ = [
    "Answer",
    "DeadlineExceeded",
    "HTTPRequestError",
    "RedirectRefused",
    "ResponseTooLarge",
    "redact_url",
    "request",
]

_CHUNK = 64 * 1024
# Query parameter names that carry secrets (api_key, access_token, sig, X-Amz-Credential, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie", re.IGNORECASE)


class HTTPRequestError(RuntimeError):
    """A request this module refused or gave up on; ``url`` is the request's, with credentials removed."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


class RedirectRefused(HTTPRequestError):
    """The server answered with a redirect (3xx), which is not followed; ``location`` is its target."""

    def __init__(self, url: str, status: int, location: str | None):
        target = redact_url(urllib.parse.urljoin(url, location)) if location else "(no Location header)"
        super().__init__(
            f"{redact_url(url)} answered HTTP {status}, a redirect to {target}; redirects are not followed, "
            "because the request carries credentials and a body meant for this address only: use the URL "
            "that answers directly",
            redact_url(url),
        )
        self.status = status
        self.location = target


class DeadlineExceeded(HTTPRequestError):
    """The whole request (connect, send, headers and body) took longer than its deadline."""

    def __init__(self, url: str, deadline_s: float):
        super().__init__(
            f"{redact_url(url)} gave no complete answer within the {deadline_s:g} s deadline "
            "(connect, send and the whole answer together)",
            redact_url(url),
        )
        self.deadline_s = deadline_s


class ResponseTooLarge(HTTPRequestError):
    """The answer's body is larger than the request's cap."""

    def __init__(self, url: str, max_bytes: int):
        super().__init__(
            f"the answer from {redact_url(url)} is larger than the {_size(max_bytes)} cap "
            "on an answer; it was not read further",
            redact_url(url),
        )
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer: its status, headers and body."""

    status: int
    headers: Message
    body: bytes


def redact_url(url: str) -> str:
    """``url`` without credentials: no ``user:pass@``, no fragment, no query parameter named like a key or token.

    Scheme, host, port, path and the other query parameters are kept.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = [
        (name, value)
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if not _SECRET_PARAM.search(name)
    ]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), ""))


def request(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline_s: float,
    max_bytes: int,
) -> Answer:
    """Send one request to ``url`` and read the whole answer within ``deadline_s`` seconds.

    Raises :class:`RedirectRefused` for a 3xx answer, :class:`DeadlineExceeded`
    when the deadline passes first, :class:`ResponseTooLarge` for a body over
    ``max_bytes``, and urllib's or http.client's errors for a connection that
    fails (see the module docstring).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"URL must start with http:// or https://, got {redact_url(url)!r}")
    watch = _Watchdog(deadline_s)
    opener = urllib.request.OpenerDirector()
    # No HTTPErrorProcessor and no HTTPRedirectHandler: every status comes back as it is, nothing is followed.
    for handler in (urllib.request.ProxyHandler(), _HTTPHandler(watch), _HTTPSHandler(watch)):
        opener.add_handler(handler)
    outgoing = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    watch.start()
    try:
        # The socket timeout bounds the connect (the watchdog can only stop a socket it has).
        with opener.open(outgoing, timeout=deadline_s) as response:
            if 300 <= response.status < 400:
                raise RedirectRefused(url, response.status, response.headers.get("Location"))
            body = _read_capped(response, url, max_bytes)
            if watch.expired:  # shut down mid-read: what came may look complete but is cut
                raise DeadlineExceeded(url, deadline_s)
            return Answer(response.status, response.headers, body)
    except (OSError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if watch.expired or isinstance(reason, TimeoutError):
            raise DeadlineExceeded(url, deadline_s) from None
        raise
    finally:
        watch.cancel()


def _read_capped(response: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes:
    length = response.headers.get("Content-Length", "")
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise ResponseTooLarge(url, max_bytes)
    chunks, size = [], 0
    # read1 returns after one receive, so the watchdog's shutdown ends the loop at the deadline.
    while chunk := response.read1(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(url, max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if declared is not None and len(body) < declared:  # read1 ends quietly where the connection did
        raise http.client.IncompleteRead(body, declared - len(body))
    return body


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count} byte"


class _Watchdog:
    """Shuts the request's socket down when the deadline passes, waking a read blocked on it."""

    def __init__(self, deadline_s: float):
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline_s, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def attach(self, sock: socket.socket) -> None:
        """Watch ``sock``, the request's connected socket (shut at once if the deadline already passed)."""
        with self._lock:
            self._socket = sock
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _shutdown(self._socket)


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its SSL state under the reader.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _WatchedConnection:
    """Mixed into an http.client connection: hands the connected socket to the request's watchdog."""

    sock: Any

    def __init__(self, *args: Any, watch: _Watchdog, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._watch = watch

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watch.attach(self.sock)


class _HTTPConnection(_WatchedConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watchdog):
        super().__init__()
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, watch=self._watch), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watchdog):
        super().__init__()
        self._watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPSConnection, watch=self._watch), req)
