"""A real chat-completions judge on 127.0.0.1 that answers each of vigos's judge prompts in the form it asks for.

The yes/no verdict prompt gets ``verdict``; MM-Vet's score prompt gets ``score``; the one-call-per-item prompt
gets one ``N: yes``/``N: no`` line per attempt: yes where the attempt's answer equals the reference (ignoring
case), no otherwise. Every request body is kept, in order.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ATTEMPTS = re.compile(r"Final answers of (\d+) attempts:\n(.*?)\n\n", re.DOTALL)
_REFERENCE = re.compile(r"Reference answer:\n(.*?)\n\n", re.DOTALL)


class JudgeServer:
    """See the module docstring; ``base_url`` is the API root to give as the judge URL."""

    def __init__(self, *, verdict: str = "Yes.", score: str = "1.0") -> None:
        self.verdict, self.score = verdict, score
        self.requests: list[dict[str, Any]] = []
        lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with lock:
                    judge.requests.append(body)
                content = judge.reply(body["messages"][-1]["content"])
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, prompt: str) -> str:
        """The reply to one user prompt."""
        attempts = _ATTEMPTS.search(prompt)
        if attempts is not None:
            reference = _REFERENCE.search(prompt).group(1).strip().lower()  # type: ignore[union-attr]
            answers = [line.split(". ", 1)[1].strip().lower() for line in attempts.group(2).splitlines()]
            return "\n".join(f"{n}: {'yes' if answer == reference else 'no'}" for n, answer in enumerate(answers, 1))
        if prompt.rstrip().endswith("Score:"):
            return self.score
        return self.verdict

    def prompts(self) -> list[str]:
        """The user prompts received, in order."""
        return [request["messages"][-1]["content"] for request in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
