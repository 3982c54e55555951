"""A PNG of an HTML report through a headless Chromium, when one is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_HINT = "install Debian's chromium: apt-get install -y chromium"


def _find_chromium(chromium: str | Path | None) -> str:
    if chromium is not None:
        if not (Path(chromium).is_file() and os.access(chromium, os.X_OK)):
            raise FileNotFoundError(f"no Chromium executable at {chromium}; {CHROMIUM_HINT}")
        return str(chromium)
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        raise FileNotFoundError(f"Chromium is not installed (no 'chromium' on PATH); {CHROMIUM_HINT}")
    return found


def screenshot_html(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1200,
    height: int = 1600,
    chromium: str | Path | None = None,
    timeout: float = 120.0,
) -> Path:
    """Render ``html_path`` with headless Chromium and save a ``width`` x ``height`` PNG at ``png_path``.

    Uses ``chromium`` when given, else the ``chromium`` on PATH
    (``/usr/bin/chromium`` from Debian's package). A fresh profile folder is
    used and removed; background networking, sync and updates are off.
    Raises FileNotFoundError when the page or Chromium is missing and
    RuntimeError when Chromium fails or writes no image.
    """
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no HTML page at {page}; write it first (write_report or compare_runs)")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive pixel counts, got {width}x{height}")
    binary = _find_chromium(chromium)
    target = Path(png_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    # A stale image from an earlier run must not pass for this one.
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigos-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={target}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ]
        with subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        ) as process:
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as error:
                # Chromium starts helper processes: end the whole group it leads, not the browser alone.
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise RuntimeError(f"Chromium did not finish the screenshot of {page} within {timeout:g} s") from error
    if process.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"Chromium could not screenshot {page} (exit code {process.returncode}):\n{tail}")
    return target
