"""math-verify in a child process that can be killed when a comparison hangs.

math-verify can hang inside C code (``10^{10^{10}}`` computes the power),
where neither its ``signal.alarm`` timeouts nor anything else in the process
can stop it, and those alarms fail outright off the main thread. So it runs in
one child process per grading process, started on first use, fed one
comparison at a time and killed when a comparison overruns its time; a later
comparison starts a fresh one. This file is also the child's program (it runs
as a plain script, so it imports nothing from vigos).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time

logger = logging.getLogger("vigos.grading")


def _math_verify_equal(gold: str, pred: str, alarm_s: int | None) -> bool:
    """math-verify's verdict on two answers; ``alarm_s`` works on a main thread only."""
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=alarm_s)
        pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=alarm_s)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=alarm_s))
    except Exception:
        logger.debug("math-verify failed on %r vs %r", gold[:80], pred[:80], exc_info=True)
        return False


def _limit_cpu(seconds: int) -> None:
    # A child hung in C code after its parent died would spin forever; past this CPU
    # budget the kernel's SIGXCPU ends it. Python installs no handler for SIGXCPU.
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(usage.ru_utime + usage.ru_stime) + 4 * seconds + 2
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def _serve_math_worker() -> None:
    """Child process loop: read ``[gold, pred, alarm_s]`` lines, answer ``1`` or ``0``."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    # Whatever a library prints must not land in the protocol stream.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import math_verify  # noqa: F401  (imported before "ready" so the first request is not slow)

    protocol.write("ready\n")
    for line in sys.stdin:
        gold, pred, alarm_s = json.loads(line)
        _limit_cpu(alarm_s)
        protocol.write("1\n" if _math_verify_equal(gold, pred, alarm_s) else "0\n")


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class _MathVerifyWorker:
    """The parent's handle on the child process that runs math-verify."""

    _START_TIMEOUT_S = 60.0
    _MAX_FAILED_STARTS = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed_starts = 0

    def compare(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """The verdict, ``False`` on timeout or crash, ``None`` when no child can run."""
        with self._lock:
            proc = self._running()
            if proc is None:
                return None
            alarm_s = max(1, int(timeout_s / 3))
            request = json.dumps([gold, pred, alarm_s]).encode() + b"\n"
            try:
                assert proc.stdin is not None
                proc.stdin.write(request)
                proc.stdin.flush()
                reply = self._read_line(proc, time.monotonic() + timeout_s)
            except (OSError, ValueError):
                reply = None
            if reply is None:
                logger.warning("math-verify took over %.1f s or died; restarting it", timeout_s)
                self._stop_locked()
                return False
            return reply == b"1"

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop_locked()
        if os.name != "posix" or self._failed_starts >= self._MAX_FAILED_STARTS:
            return None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                # Out of the terminal's process group: Ctrl-C is the parent's business.
                start_new_session=True,
            )
        except OSError:
            proc = None
        if proc is None or self._read_line(proc, time.monotonic() + self._START_TIMEOUT_S) != b"ready":
            self._failed_starts += 1
            if proc is not None:
                _close_pipes(proc)
                proc.kill()
                proc.wait()
            if self._failed_starts >= self._MAX_FAILED_STARTS:
                logger.warning("cannot start the math-verify process; running math-verify in-process")
            return None
        self._failed_starts = 0
        self._proc = proc
        return proc

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buffer += chunk
        return buffer.strip()

    def _stop_locked(self) -> None:
        if self._proc is not None:
            _close_pipes(self._proc)
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """End the child process (a later comparison starts a new one)."""
        with self._lock:
            self._stop_locked()

    def forget_after_fork(self) -> None:
        # In a forked child the process belongs to the parent: drop our copies of
        # its pipes (so it still sees EOF when the parent goes) and start afresh.
        self._lock = threading.Lock()
        if self._proc is not None:
            _close_pipes(self._proc)
            self._proc = None


_WORKER = _MathVerifyWorker()
atexit.register(_WORKER.stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER.forget_after_fork)


def compare(gold: str, pred: str, timeout_s: float) -> bool | None:
    """math-verify's verdict in the child process; ``None`` when no child can run."""
    return _WORKER.compare(gold, pred, timeout_s)


if __name__ == "__main__":
    _serve_math_worker()
