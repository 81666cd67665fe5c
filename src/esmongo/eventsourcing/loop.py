"""One asyncio event loop in a thread of its own, for callers that are synchronous.

The `eventsourcing` library calls its recorders synchronously, from many threads. Each
call is submitted here as a coroutine of esmongo's async store: the transaction logic
(counter, insert, commit retry, error classification) is the store's, not a copy, and
calls made at once from ten threads are ten concurrent appends on this loop, which the
store's group commit writes in shared transactions (docs/adr/0011).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop until `close()`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Stopped: finish what is still scheduled (cancelled tasks' cleanups), then close.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (from any other thread)."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking call made from the loop's own thread would deadlock")
        if not self.running:
            coroutine.close()
            raise RuntimeError("the event loop of this factory is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Stop the loop and wait for its thread. Idempotent."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
