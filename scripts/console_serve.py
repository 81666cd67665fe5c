"""What the console's dev tools share: Debian's Chromium for Playwright (where it is, how it
is launched) and an `esmongo serve` process on a free port, waited for and stopped.

Used by tests/console_browser.py, scripts/console_screenshots.py and
benchmarks/bench_console.py, which run from a checkout with the dev extra (httpx); not part
of the package, so it adds nothing to what the package needs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from esmongo.connect.embedded import free_port

ESMONGO = str(Path(sys.executable).parent / "esmongo")
"""The console script of the interpreter running the tool (the venv's)."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless, in a container, and nothing that goes to the network on its own."""


def chromium_path() -> str | None:
    """Debian's Chromium (`apt-get install chromium`), or None where none is installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ServeFailed(Exception):
    """`esmongo serve` exited, or was not ready in time; the message carries its log."""


@contextmanager
def serve(
    env: Mapping[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    ready_within_s: float = 90.0,
    args: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`esmongo serve` with `env` on a free port, its output in `log`: the URL and the
    process once `/readyz` answers 200 (ServeFailed otherwise); stopped on leaving. `args`
    come after `--log-level warning` (a later `--log-level` wins)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [ESMONGO, "serve", "--port", str(port), "--log-level", "warning", *args],
            env=dict(env),
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, process, log, ready_within_s)
        yield url, process
    finally:
        stop(process)


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, ready_within_s: float
) -> None:
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise ServeFailed(f"esmongo serve exited: {log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > ready_within_s:
            raise ServeFailed(
                f"esmongo serve not ready within {ready_within_s:.0f}s: {log.read_text()}"
            )
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an operator would (a clean shutdown); killed if still there after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
