"""One change stream on the store's appends per process, used only to wake the runners up.

The stream (EventStore.watch) filters on the server, on the handled event types, and
carries no event data: a runner that wakes up reads by sequence after its checkpoint, so
what the stream delivers (or drops) never decides what is applied. That is why a lost
resume token (history gone from the oplog) only costs a catch-up read: the watcher logs
it, opens a fresh stream, and wakes every runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import PyMongoError

from esmongo.codec import Document
from esmongo.store import EventStore

log = logging.getLogger(__name__)


class EventWatcher:
    """Watches the store's appends and sets the subscribers' events."""

    def __init__(
        self,
        store: EventStore,
        *,
        max_await_ms: int = 1000,
        retry_pause_s: float = 0.5,
    ) -> None:
        self.store = store
        self.max_await_ms = max_await_ms
        self.retry_pause_s = retry_pause_s
        self._subscribers: list[tuple[frozenset[str], asyncio.Event]] = []
        self.resume_token: Mapping[str, Any] | None = None
        self.ready = asyncio.Event()
        """Set once the stream is open: events committed from then on wake runners."""
        self.opened = 0
        self.tokens_lost = 0
        self.last_sequence = 0
        """The highest sequence a change told of: it and all below are committed."""
        self._types: frozenset[str] = frozenset()

    def subscribe(self, event_types: Iterable[str], wake: asyncio.Event) -> None:
        """Set `wake` whenever an event of one of these types is inserted."""
        types = frozenset(event_types)
        self._subscribers.append((types, wake))
        self._types = self._types | types

    def _wake_all(self) -> None:
        for _types, wake in self._subscribers:
            wake.set()

    async def _open(self) -> AsyncChangeStream[Document]:
        token = self.resume_token
        if token is not None:
            try:
                return await self.store.watch(
                    self._types, resume_after=token, max_await_ms=self.max_await_ms
                )
            except PyMongoError as exc:
                self.tokens_lost += 1
                self.resume_token = None
                log.warning(
                    "change stream: could not resume from the saved token (%s); the history "
                    "may be gone from the oplog. Opening a new stream; runners catch up by "
                    "sequence, so nothing is missed.",
                    exc,
                )
        return await self.store.watch(self._types, max_await_ms=self.max_await_ms)

    async def run(self) -> None:
        """Watch until cancelled, reopening the stream after errors."""
        while True:
            try:
                stream = await self._open()
            except PyMongoError as exc:
                log.warning("change stream: cannot open (%s); retrying", exc)
                await asyncio.sleep(self.retry_pause_s)
                continue
            self.opened += 1
            self.ready.set()
            # Anything committed while no stream was open is found by a catch-up read.
            self._wake_all()
            try:
                async with stream:
                    await self._consume(stream)
            except PyMongoError as exc:
                log.warning("change stream interrupted (%s); resuming", exc)
                await asyncio.sleep(self.retry_pause_s)

    async def _consume(self, stream: AsyncChangeStream[Document]) -> None:
        while True:
            change = await stream.try_next()
            if stream.resume_token is not None:
                self.resume_token = stream.resume_token
            if change is None:
                continue
            document = change.get("fullDocument") or {}
            event_type = document.get("eventType")
            sequence = document.get("sequence")
            if isinstance(sequence, int) and sequence > self.last_sequence:
                self.last_sequence = sequence
            for types, wake in self._subscribers:
                if event_type in types:
                    wake.set()
