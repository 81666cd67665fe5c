"""The service on a loopback port in a background thread: for the demo, benchmarks and tests
that must speak real HTTP to it from the same process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from esmongo.connect.embedded import free_port

START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn in a thread with its own event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="esmongo-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
