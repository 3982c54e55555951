"""A real HTTP server on 127.0.0.1 in a thread, for tests of HTTP clients against stub handlers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], stop: threading.Event | None = None) -> Iterator[str]:
    """Serve ``handler`` on a free port; yields the base URL. ``stop`` is set before shutdown, so a
    handler that trickles its answer can end early."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if stop is not None:
            stop.set()
        server.shutdown()
        server.server_close()
