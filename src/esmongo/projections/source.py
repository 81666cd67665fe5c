"""Where runners read events from: straight from the store, or through a shared window.

Each projection reads the events after its own checkpoint. When several projections of
one process catch up together they ask for the same ranges, and on a single server the
reads cost as much as the writes. `SharedSource` reads each range once (filtered on the
union of their event types) and serves every runner from it.

Both return, with the events, the sequence up to which the answer is complete: all
handled events up to it are in the answer. That is what the runner moves its checkpoint
to. It relies on the store's invariant: a read that sees sequence N saw every event below.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import bson

from esmongo.codec import CODEC_OPTIONS
from esmongo.events import RecordedEvent
from esmongo.store import EventStore

SIZE_SAMPLE = 16
"""One event in this many is encoded to estimate the bytes a read holds (encoding every
one would cost ~15 us an event, a tenth of a catch-up's budget per event)."""


@dataclass(frozen=True)
class Window:
    """Events after some position, complete up to `complete`; `head` as read before them."""

    events: list[RecordedEvent]
    complete: int
    head: int


@dataclass(frozen=True)
class Backlog:
    """How much a reader more than its live batch behind the head reads at once (a
    catch-up batch, RunnerOptions): up to `events` sequences, about `max_bytes` of them."""

    events: int
    max_bytes: int

    def limits(self, after: int, limit: int, head: int) -> tuple[int, int | None]:
        """(sequences, bytes or None) to read after `after`, with the head known."""
        if head - after > limit:
            return max(limit, self.events), self.max_bytes
        return limit, None


class EventSource(Protocol):
    async def read(
        self, after: int, limit: int, event_types: Sequence[str], backlog: Backlog | None = None
    ) -> Window:
        """At most `limit` events of these types after `after` (by `backlog` when more
        than `limit` behind the head), and how far that is complete."""
        ...


class _Weigher:
    """Estimates the stored size of the events read so far from a sample of them."""

    def __init__(self) -> None:
        self.count = 0
        self.sampled = 0
        self.sampled_bytes = 0

    def add(self, event: RecordedEvent) -> int:
        """Count `event`; the estimated bytes of every event counted so far."""
        if self.count % SIZE_SAMPLE == 0:
            document = event.to_document()
            self.sampled_bytes += len(bson.encode(document, codec_options=CODEC_OPTIONS))
            self.sampled += 1
        self.count += 1
        return self.sampled_bytes * self.count // self.sampled


async def _read(
    store: EventStore,
    after: int,
    limit: int,
    event_types: Sequence[str],
    head: int,
    max_bytes: int | None = None,
) -> tuple[list[RecordedEvent], int]:
    """The handled events in (after, min(after + limit, head)], and that bound.

    The sequence has no gaps and every event up to `head` (read before) is committed,
    so the range holds at most `limit` events and the answer is complete up to its end.
    With `max_bytes`, the read stops after the event that brings the estimate past it
    (at least one event): the answer is then complete up to that event's sequence.

    The range is read whole and the types filtered here: a filter on the sequence range
    and `eventType` together is a collection scan on the embedded server (docs/mongodb.md),
    MongoDB itself examines the same range either way, and a range the active collection
    holds whole is then read without the archive (esmongo.store.archive.merged) on every
    live wake-up, not only when every event in it is of a handled type.
    """
    through = min(after + limit, head)
    wanted = frozenset(event_types)
    events: list[RecordedEvent] = []
    weigher = _Weigher()
    reader = store.read_all(after, through=through, batch_size=limit)
    async with contextlib.aclosing(reader):
        async for event in reader:
            if event.event_type in wanted:
                events.append(event)
            if max_bytes is not None and weigher.add(event) >= max_bytes:
                return events, event.sequence
    return events, through


class StoreSource:
    """Reads every batch from the store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def read(
        self, after: int, limit: int, event_types: Sequence[str], backlog: Backlog | None = None
    ) -> Window:
        head = await self.store.head_sequence()
        if head <= after:
            return Window([], after, head)
        if backlog is not None:
            limit, max_bytes = backlog.limits(after, limit, head)
        else:
            max_bytes = None
        events, complete = await _read(self.store, after, limit, event_types, head, max_bytes)
        return Window(events, complete, head)


class SharedSource:
    """A window of recent events, complete over (low, high], shared by several runners.

    `known_head` (the daemon's change stream: the highest sequence it was told of) saves
    the head read of a live wake-up. A notified sequence is committed, and so is every
    sequence below it: appends take their sequences from one counter inside their
    transaction, so they commit in sequence order (ADR 0001).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        fetch_size: int = 1000,
        capacity: int = 20_000,
        known_head: Callable[[], int] | None = None,
    ):
        self.store = store
        self.known_head = known_head
        self.fetch_size = fetch_size
        self.capacity = max(capacity, fetch_size)
        self._types: set[str] = set()
        self._events: list[RecordedEvent] = []
        self._sequences: list[int] = []
        self._low = 0
        self._high = 0
        self._head = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def register(self, event_types: Iterable[str]) -> None:
        """Add the event types of a runner that will read through this source."""
        self._types.update(event_types)
        self._events, self._sequences, self._low, self._high = [], [], 0, 0

    async def read(
        self, after: int, limit: int, event_types: Sequence[str], backlog: Backlog | None = None
    ) -> Window:
        wanted = set(event_types)
        if not wanted <= self._types:
            return await StoreSource(self.store).read(after, limit, event_types, backlog)
        # Runners woken by the same insert queue here; the first reads for all of them.
        async with self._lock:
            known = self.known_head() if self.known_head is not None else 0
            # A window served from the cache stops at what was fetched; a later
            # notification must still show as waiting, or the runner whose wake it was
            # (cleared as its step began) would sleep until the next append or poll.
            self._head = max(self._head, known)
            if not self._low <= after < self._high:
                head = known if known > after else await self.store.head_sequence()
                self._head = head
                if head <= after:
                    return Window([], after, head)
                size, max_bytes = backlog.limits(after, limit, head) if backlog else (limit, None)
                await self._fetch(after, max(size, self.fetch_size), head, max_bytes)
            if backlog is not None:
                limit, max_bytes = backlog.limits(after, limit, self._head)
            else:
                max_bytes = None
            events, complete = self._serve(after, limit, wanted, max_bytes)
            return Window(events, complete, self._head)

    async def _fetch(self, after: int, size: int, head: int, max_bytes: int | None) -> None:
        events, complete = await _read(
            self.store, after, size, sorted(self._types), head, max_bytes
        )
        self.fetches += 1
        if after == self._high and self._events:
            self._events.extend(events)
        else:
            self._events = list(events)
            self._low = after
        self._high = complete
        if len(self._events) > self.capacity:
            cut = len(self._events) - self.capacity
            self._low = self._events[cut - 1].sequence
            del self._events[:cut]
        self._sequences = [event.sequence for event in self._events]

    def _serve(
        self, after: int, limit: int, wanted: set[str], max_bytes: int | None
    ) -> tuple[list[RecordedEvent], int]:
        start = bisect.bisect_right(self._sequences, after)
        found: list[RecordedEvent] = []
        weigher = _Weigher()
        for event in self._events[start:]:
            if event.event_type in wanted:
                found.append(event)
                if len(found) == limit:
                    return found, event.sequence
                if max_bytes is not None and weigher.add(event) >= max_bytes:
                    return found, event.sequence
        return found, max(self._high, after)
