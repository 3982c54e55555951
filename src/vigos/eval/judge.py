"""LLM judge: ask an OpenAI-compatible chat endpoint whether a response's answer matches the reference.

Where rules cannot decide correctness (free-form answers, MM-Vet), the
evaluation protocol asks a language model. Any server that speaks the
OpenAI chat-completions schema works (vLLM, llama.cpp, a hosted API): the
client POSTs to ``{base_url}/chat/completions`` with the standard library
only, reads the API key from an environment variable, retries timeouts,
connection errors, 429 and 5xx with exponential back-off, bounds the number
of requests in flight, and keeps every reply in an sqlite cache so that a
re-run asks the server nothing it has already answered. The prompts besides
the yes/no verdict (MM-Vet's partial credit, one call per item) are in
:mod:`vigos.eval.judge_prompts`. A redirect is never
followed (it would carry the API key elsewhere), each attempt has a deadline
over the whole request, and an answer over ``MAX_REPLY_BYTES`` is refused
(see :mod:`vigos.http_client`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vigos.http_client import DeadlineExceeded, RedirectRefused, ResponseTooLarge, redact_url
from vigos.http_client import request as http_request

__all__ = [
    "JUDGE_SYSTEM_PROMPT",
    "JUDGE_USER_PROMPT",
    "JudgeClient",
    "JudgeConfig",
    "JudgeError",
    "MAX_REPLY_BYTES",
    "parse_verdict",
]

JUDGE_SYSTEM_PROMPT = "You check answers to exam questions. You reply with a single word, yes or no, and nothing else."
JUDGE_USER_PROMPT = (
    "Question:\n{question}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Candidate response:\n{response}\n\n"
    "Look only at the final answer the candidate response gives. Is it the same answer as the "
    "reference answer? Differences in wording, formatting, units or equivalent forms of the same "
    "value do not matter; a choice letter counts as the option it names. Reply yes or no."
)
VERDICT_FORM = "a verdict: it says neither yes nor no"
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_MAX_RETRY_AFTER_S = 60.0
# A verdict is a word; even a reasoning judge's reply fits with room to spare. A bigger answer is not a judge's.
MAX_REPLY_BYTES = 4 * 2**20
T = TypeVar("T")


class JudgeError(RuntimeError):
    """The judge could not give a verdict; the message names the URL, what failed and what to do."""


class _Retryable(Exception):
    """One failed attempt that a later attempt may fix; ``delay_s`` is a server-requested wait."""

    def __init__(self, message: str, *, unreachable: bool = False, delay_s: float | None = None):
        super().__init__(message)
        self.unreachable = unreachable
        self.delay_s = delay_s


@dataclass
class JudgeConfig:
    """Where the judge lives and how to talk to it.

    ``base_url`` is the API root (e.g. ``http://127.0.0.1:8000/v1``); the key
    is read from the environment variable ``api_key_env`` (no Authorization
    header is sent when it is unset, as local servers need none).
    ``timeout_s`` is the deadline of one attempt as a whole: connect, send
    and the whole answer. ``max_retries`` counts attempts after the first;
    the wait before retry ``i`` is about ``backoff_s * 2**i``.
    ``concurrency`` bounds requests in flight. ``cache_path`` names an
    sqlite file of verdicts (``None``: no cache).
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 4
    cache_path: str | None = None
    temperature: float = 0.0
    max_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("judge model is empty; name the model the server serves (e.g. --judge-model)")
        if self.timeout_s <= 0:
            raise ValueError(f"judge timeout_s must be positive, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"judge max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_s < 0:
            raise ValueError(f"judge backoff_s must be >= 0, got {self.backoff_s}")
        if self.concurrency < 1:
            raise ValueError(f"judge concurrency must be at least 1, got {self.concurrency}")
        if self.max_tokens < 1:
            raise ValueError(f"judge max_tokens must be at least 1, got {self.max_tokens}")

    @property
    def endpoint(self) -> str:
        """The chat-completions URL: ``/chat/completions`` after the path, before any query."""
        parts = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))


class _ReplyCache:
    """The judge's replies in an sqlite file, keyed by a hash of (model, system prompt, user prompt): a changed
    prompt is a new key, so a reply to an older prompt is never reused."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared by the client's threads, serialised by the lock;
        # sqlite's own file lock covers other processes using the same file.
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, reply: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, reply))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def parse_verdict(reply: str) -> bool | None:
    """``True``/``False`` for the first "yes"/"no" in the reply (after any ``<think>`` block), else ``None``."""
    match = _VERDICT.search(_THINKING.sub(" ", reply))
    return None if match is None else match.group(1).lower() == "yes"


class JudgeClient:
    """Asks one OpenAI-compatible endpoint: yes/no verdicts on (question, reference, response) triples
    (:meth:`judge`, :meth:`judge_many`), or any prompt with its own reply parser (:meth:`ask`, :meth:`ask_many`).

    Safe to share between threads. Use as a context manager, or call
    :meth:`close`, to release the cache file.
    """

    def __init__(self, config: JudgeConfig):
        self.config = config
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._cache = _ReplyCache(config.cache_path) if config.cache_path else None
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0}

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the cache file."""
        if self._cache is not None:
            self._cache.close()

    def cache_key(self, question: str, reference: str, response: str) -> str:
        """The cache key of a triple under this client's model and the yes/no prompt."""
        return self._key(*_verdict_prompt(question, reference, response))

    def judge(self, question: str, reference: str, response: str) -> bool:
        """Whether ``response``'s final answer is equivalent to ``reference``; raises :class:`JudgeError`."""
        return self.ask(*_verdict_prompt(question, reference, response), parse_verdict, form=VERDICT_FORM)

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Yes/no verdicts for many triples, in order (see :meth:`ask_many`)."""
        return self.ask_many([_verdict_prompt(*item) for item in items], parse_verdict, form=VERDICT_FORM)

    def ask(
        self, system: str, user: str, parse: Callable[[str], T | None], *, form: str, max_tokens: int | None = None
    ) -> T:
        """``parse`` of the judge's reply to the ``system`` and ``user`` prompts, from the cache when it holds the
        reply. A reply that ``parse`` gives ``None`` for (not ``form``, e.g. "a yes or a no") is asked again, up to
        ``max_retries`` times; raises :class:`JudgeError`. ``max_tokens`` raises the reply's length limit above
        ``config.max_tokens`` for a reply longer than a word."""
        key = self._key(system, user)
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None and (value := parse(cached)) is not None:
                self._count("cache_hits")
                return value
        value, reply = self._ask(self._request_body(system, user, max_tokens), parse, form)
        if self._cache is not None:
            self._cache.put(key, reply)
        return value

    def ask_many(
        self,
        prompts: Sequence[tuple[str, str]],
        parse: Callable[[str], T | None],
        *,
        form: str,
        max_tokens: int | None = None,
    ) -> list[T]:
        """:meth:`ask` for many (system, user) prompts, in order, with at most ``concurrency`` requests in flight.

        Identical prompts are asked once. On the first failure the prompts not
        yet started are dropped and the :class:`JudgeError` is raised; replies
        already received stay in the cache, so a re-run resumes.
        """
        keys = [self._key(*prompt) for prompt in prompts]
        unique: dict[str, tuple[str, str]] = {}
        for key, prompt in zip(keys, prompts):
            unique.setdefault(key, prompt)
        executor = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="vigos-judge")
        try:
            futures: dict[str, Future[T]] = {
                key: executor.submit(self.ask, *prompt, parse, form=form, max_tokens=max_tokens)
                for key, prompt in unique.items()
            }
            values = {key: future.result() for key, future in futures.items()}
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        return [values[key] for key in keys]

    def _key(self, system: str, user: str) -> str:
        payload = json.dumps([self.config.model, system, user])
        return hashlib.sha256(payload.encode()).hexdigest()

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def _request_body(self, system: str, user: str, max_tokens: int | None = None) -> bytes:
        return json.dumps(
            {
                "model": self.config.model,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "temperature": self.config.temperature,
                "max_tokens": max(self.config.max_tokens, max_tokens or 0),
            }
        ).encode()

    def _ask(self, body: bytes, parse: Callable[[str], T | None], form: str) -> tuple[T, str]:
        """Send the request, retrying what may pass on a later attempt."""
        attempts = self.config.max_retries + 1
        attempt = 0
        while True:
            try:
                with self._slots:
                    return self._attempt(body, parse, form)
            except _Retryable as failure:
                attempt += 1
                if attempt == attempts:
                    raise self._final_error(failure, attempts) from None
                wait = self.config.backoff_s * 2 ** (attempt - 1) * (1.0 + 0.25 * random.random())
                time.sleep(max(wait, failure.delay_s or 0.0))

    def _final_error(self, failure: _Retryable, attempts: int) -> JudgeError:
        url = self._url
        if failure.unreachable:
            return JudgeError(
                f"could not reach the judge at {url}: {failure} (after {attempts} attempts); "
                "start the server or fix --judge-url"
            )
        return JudgeError(
            f"the judge at {url} failed {attempts} times; last failure: {failure}. "
            "Check the server's log, or raise the judge timeout / retries"
        )

    def _attempt(self, body: bytes, parse: Callable[[str], T | None], form: str) -> tuple[T, str]:
        """One HTTP round trip: the parsed reply and its raw text, or :class:`_Retryable`."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = os.environ.get(self.config.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._count("requests")
        try:
            answer = http_request(
                self.config.endpoint,
                method="POST",
                data=body,
                headers=headers,
                deadline_s=self.config.timeout_s,
                max_bytes=MAX_REPLY_BYTES,
            )
        except RedirectRefused as error:
            raise JudgeError(
                f"the judge at {self._url} answered HTTP {error.status}, a redirect to {error.location}, which is "
                f"not followed: the request carries the API key (${self.config.api_key_env}). If that address is "
                "the judge, give its API root as --judge-url"
            ) from None
        except ResponseTooLarge as error:
            raise JudgeError(
                f"{error}: a verdict is a few bytes, so check that --judge-url names a "
                "chat-completions API root (e.g. http://HOST:PORT/v1)"
            ) from None
        except DeadlineExceeded:
            raise _Retryable(
                f"no complete answer within {self.config.timeout_s:g} s, the deadline of one request"
            ) from None
        except urllib.error.URLError as error:
            raise _Retryable(str(error.reason), unreachable=True) from None
        except (OSError, http.client.HTTPException) as error:
            raise _Retryable(f"connection failed: {error!r}") from None
        if not 200 <= answer.status < 300:
            detail = answer.body[:500].decode("utf-8", "replace").strip()
            if answer.status in _RETRY_STATUS:
                raise _Retryable(f"HTTP {answer.status} {detail}", delay_s=_retry_after(answer.headers))
            raise JudgeError(self._http_advice(answer.status, detail))
        reply = _reply_text(answer.body)
        value = parse(reply)
        if value is None:
            raise _Retryable(f"the reply {reply[:200]!r} is not {form}")
        return value, reply

    @property
    def _url(self) -> str:
        """The endpoint as messages show it: without credentials."""
        return redact_url(self.config.endpoint)

    def _http_advice(self, code: int, detail: str) -> str:
        url = self._url
        if code in (401, 403):
            return (
                f"the judge at {url} refused the request (HTTP {code}: {detail}); "
                f"set the API key in the environment variable {self.config.api_key_env}"
            )
        if code == 404:
            return (
                f"the judge at {url} answered HTTP 404 ({detail}); check --judge-url (it should end "
                f"in the API root, e.g. /v1) and that the server serves model {self.config.model!r}"
            )
        return f"the judge at {url} rejected the request (HTTP {code}: {detail})"


def _verdict_prompt(question: str, reference: str, response: str) -> tuple[str, str]:
    """The (system, user) prompts that ask whether ``response`` gives the ``reference`` answer."""
    return JUDGE_SYSTEM_PROMPT, JUDGE_USER_PROMPT.format(question=question, reference=reference, response=response)


def _retry_after(headers: Any) -> float | None:
    """Seconds from a numeric ``Retry-After`` header, capped; ``None`` if absent or a date."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), _MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def _reply_text(raw: bytes) -> str:
    """The assistant message of a chat-completions answer, or :class:`_Retryable` naming what is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Retryable(f"malformed JSON in the answer ({error}): {raw[:200]!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _Retryable(f"the answer has no 'choices': {raw[:200]!r}")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise _Retryable(f"the answer's choices[0].message.content is not text: {raw[:200]!r}")
    return content
