"""Group commit: concurrent appends share one transaction, formed by leader/follower batching.

Every append transaction writes the one `counters` document, so appends that each run
their own transaction conflict on it and commit one after the other. Queued together they
take the counter once per batch instead. Batches form by themselves: while a batch is being
written, new appends queue; when it is done, everything queued goes as the next batch. A
lone writer goes straight through (no timer, no added latency); under load batches grow to
the bounds given. Two appends touching one stream never share a batch: the later one waits
for the next, so it is checked against what the earlier one wrote.

This module only forms batches; what a batch does (the transaction) is the `flush` callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Pending(Protocol):
    """One queued caller: what it locks, how big it is, and where its answer goes."""

    @property
    def keys(self) -> frozenset[Hashable]:
        """Streams it writes: no two pending items with a common key share a batch."""
        ...

    @property
    def count(self) -> int:
        """Events it writes."""
        ...

    @property
    def size(self) -> int:
        """Estimated bytes it writes."""
        ...

    @property
    def future(self) -> asyncio.Future[Any]:
        """Settled by `flush`; cancelled when its caller gave up."""
        ...


P = TypeVar("P", bound=Pending)


class GroupCommit(Generic[P]):
    """Queues pending appends and hands them to `flush` in batches, one batch at a time.

    `flush(batch)` must settle every item's future. A batch holds at most `max_events`
    events and `max_bytes` estimated bytes, except that an item bigger than that goes alone.
    """

    def __init__(
        self,
        flush: Callable[[list[P]], Awaitable[None]],
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be positive")
        self._flush = flush
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._queue: deque[P] = deque()
        self._leader: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the one being written)."""
        return len(self._queue)

    def submit(self, item: P) -> None:
        """Queue `item`; start a leader if no batch is being written. Await `item.future`."""
        loop = asyncio.get_running_loop()
        if self._leader is not None and self._leader.get_loop() is not loop:
            # Used from a new event loop: the old one's leader and callers are gone.
            self._queue = deque(i for i in self._queue if i.future.get_loop() is loop)
            self._leader = None
        self._queue.append(item)
        if self._leader is None or self._leader.done():
            self._leader = loop.create_task(self._lead())

    async def _lead(self) -> None:
        """Write batches until the queue is empty: what queued during one is the next."""
        me = asyncio.current_task()
        try:
            while self._queue:
                batch = self._next_batch()
                if batch:
                    await self._write(batch)
        except asyncio.CancelledError:  # the loop is closing: nobody will write these
            while self._queue:
                self._queue.popleft().future.cancel()
            raise
        finally:
            if self._leader is me:
                self._leader = None

    async def _write(self, batch: list[P]) -> None:
        try:
            await self._flush(batch)
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:
            log.exception("group commit: a batch of %d appends failed", len(batch))
            _fail(batch, exc)
        _fail(batch, RuntimeError("group commit: the batch writer left this append unanswered"))

    def _next_batch(self) -> list[P]:
        """Take from the queue, in order, what fits one batch; skip abandoned items."""
        batch: list[P] = []
        deferred: list[P] = []
        locked: set[Hashable] = set()
        events = size = 0
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # its caller was cancelled before the batch formed
                continue
            if batch and (
                events + item.count > self.max_events or size + item.size > self.max_bytes
            ):
                self._queue.appendleft(item)
                break
            if not locked.isdisjoint(item.keys):
                deferred.append(item)
                continue
            batch.append(item)
            locked.update(item.keys)
            events += item.count
            size += item.size
        self._queue.extendleft(reversed(deferred))
        return batch


def _fail(batch: list[Any], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
