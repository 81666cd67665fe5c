"""Load aggregates (latest snapshot + newer events) and save their new events.

Saving appends with the version the aggregate was loaded at, so a concurrent change is a
ConcurrencyError, never a lost update. Snapshots are written in the background after the
append and never fail it.

With a cache (esmongo.model.cache), a load starts from the copy kept at the last load or
save of this process and reads only the events after it: no snapshot read, and one indexed
query that is usually empty. A save it then makes expects the kept version: when another
process wrote since, the load has read that already, or the save conflicts and the caller's
retry loads again, fast-forwarded (ADR 0013). An optimistic load (`optimistic=True`) reads
nothing when a copy is kept and not doubted: a command decides on it and its save's expected
version guards the decision, so a command on an aggregate this process wrote last is one
transaction and no query.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from esmongo.errors import AggregateNotFoundError, ConcurrencyError
from esmongo.events import NO_STREAM, RecordedEvent, StreamId
from esmongo.metrics import CACHE_TRUSTED, REPLAY_DURATION, SNAPSHOT_LOADS
from esmongo.model.aggregate import Aggregate
from esmongo.model.cache import AggregateCache
from esmongo.model.snapshots import SnapshotStore, crosses_interval
from esmongo.store import AppendRequest, EventStore
from esmongo.store.unit_of_work import Writes

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
Progress = Callable[[int, int], None]


class Repository(Generic[A]):
    """Aggregates of one class, in one event store.

    `snapshot_every` N: a snapshot is written whenever a save moves the aggregate across a
    multiple of N (0 or no snapshot store: never). `cache`: keeps what was loaded and
    saved, so that a load reads only newer events (None: every load reads from the
    snapshot).
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_class: type[A],
        *,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 50,
        cache: AggregateCache[A] | None = None,
    ) -> None:
        self.store = store
        self.aggregate_class = aggregate_class
        self.aggregate_type = aggregate_class.aggregate_type
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every if snapshots is not None else 0
        self.cache = cache
        self._background: set[asyncio.Task[None]] = set()

    # ---- load -------------------------------------------------------------------

    async def load(self, aggregate_id: str, *, optimistic: bool = False) -> A:
        """The aggregate at its current version; AggregateNotFoundError if it has no event.

        `optimistic`: the kept copy as it is, unread, for a decision that a save will guard
        with the copy's version (a refusal decided on it is not guarded: check it again on
        a load that reads before answering it)."""
        kept = self._trusted(aggregate_id) if optimistic else None
        aggregate = kept if kept is not None else await self._load(aggregate_id)
        if not aggregate.exists:
            raise AggregateNotFoundError(StreamId(self.aggregate_type, aggregate_id))
        return aggregate

    async def load_or_new(self, aggregate_id: str, *, optimistic: bool = False) -> A:
        """The aggregate, or a new empty one (version 0) when it has no event yet."""
        kept = self._trusted(aggregate_id) if optimistic else None
        return kept if kept is not None else await self._load(aggregate_id)

    def _trusted(self, aggregate_id: str) -> A | None:
        kept = self.cache.trusted(aggregate_id) if self.cache is not None else None
        if kept is not None:
            CACHE_TRUSTED.labels(self.aggregate_type).inc()
        return kept

    async def _load(self, aggregate_id: str) -> A:
        started = time.perf_counter()
        kept = self.cache.get(aggregate_id) if self.cache is not None else None
        aggregate = kept if kept is not None else await self._from_snapshot(aggregate_id)
        start = aggregate.version
        # From the version held, not after it: found in the active collection, it tells
        # read_stream that the stream is not archived, which then reads no archive.
        async for event in self.store.read_stream(
            self.aggregate_type, aggregate_id, from_version=max(start, 1)
        ):
            if event.aggregate_version > start:
                aggregate.apply(event)
        REPLAY_DURATION.labels(self.aggregate_type).observe(time.perf_counter() - started)
        if self.cache is not None and aggregate.exists:
            if kept is None or aggregate.version > start:
                self.cache.put(aggregate)
            else:
                self.cache.confirm(aggregate_id, start)
        return aggregate

    async def _from_snapshot(self, aggregate_id: str) -> A:
        if self.snapshots is None:
            return self.aggregate_class(aggregate_id)
        snapshot = await self.snapshots.get(self.aggregate_type, aggregate_id)
        usable = (
            snapshot is not None and snapshot.schema_version == self.aggregate_class.schema_version
        )
        if snapshot is not None and usable:
            try:
                aggregate = self.aggregate_class.from_snapshot(
                    aggregate_id, snapshot.version, snapshot.state
                )
            except Exception:
                # A snapshot is a cache, never the truth: one that cannot be restored costs
                # a full replay, not the load.
                log.exception(
                    "snapshot of %s/%s at version %d cannot be restored: replaying all events",
                    self.aggregate_type,
                    aggregate_id,
                    snapshot.version,
                )
            else:
                SNAPSHOT_LOADS.labels(self.aggregate_type, "hit").inc()
                return aggregate
        SNAPSHOT_LOADS.labels(self.aggregate_type, "miss").inc()
        return self.aggregate_class(aggregate_id)

    async def recorded_event(self, event_id: str) -> RecordedEvent | None:
        """The event of this aggregate type recorded with this id, or None."""
        event = await self.store.find_event(event_id)
        return event if event is not None and event.aggregate_type == self.aggregate_type else None

    # ---- save -------------------------------------------------------------------

    async def save(
        self,
        aggregate: A,
        *,
        metadata: Mapping[str, Any] | None = None,
        writes: Writes | None = None,
    ) -> list[RecordedEvent]:
        """Append the aggregate's new events, expecting the version it was loaded at.

        `metadata` is only checked: the events must have been raised with it (see
        `Aggregate.begin_command`), so that the handlers saw what the store records.

        When every event id was recorded before (a retried command with stable event
        ids), the store returns that earlier recording and writes nothing; the aggregate
        in memory then does not match the store: load it again before using it.

        `writes` (esmongo.store.unit_of_work): documents that commit with the events or not at
        all, e.g. the record of the response to the request that ran this command.
        """
        (recorded,) = await self.save_all([aggregate], metadata=metadata, writes=writes)
        return recorded

    async def save_all(
        self,
        aggregates: Sequence[A],
        *,
        metadata: Mapping[str, Any] | None = None,
        writes: Writes | None = None,
    ) -> list[list[RecordedEvent]]:
        """Save several aggregates in one transaction: all of them, or none (`writes` too)."""
        requests = [self._request(a, metadata) for a in aggregates]
        try:
            recorded = await self.store.append_streams(requests, writes=writes)
        except ConcurrencyError:
            if self.cache is not None:
                for aggregate in aggregates:
                    self.cache.doubt(aggregate.id)
            raise
        for aggregate, events in zip(aggregates, recorded, strict=True):
            self._after_save(aggregate, events)
        return recorded

    def _request(self, aggregate: A, metadata: Mapping[str, Any] | None) -> AppendRequest:
        events = aggregate.uncommitted_events
        for event in events:
            missing = sorted(k for k in metadata or {} if k not in event.metadata)
            if missing:
                # Added now, it would be stored but unseen by the handler that already ran:
                # a snapshot of this object would then differ from a replay.
                raise ValueError(
                    f"{self.aggregate_type}/{aggregate.id}: event {event.event_type} was raised "
                    f"without the metadata {missing} given to save; pass metadata to "
                    "aggregate.begin_command(metadata=...) before the command raises events"
                )
        expected = aggregate.loaded_version or NO_STREAM
        return AppendRequest(self.aggregate_type, aggregate.id, events, expected)

    def _after_save(self, aggregate: A, events: list[RecordedEvent]) -> None:
        old_version = aggregate.loaded_version
        aggregate.mark_committed()
        if not events or events[0].replayed:
            # An earlier recording of the same event ids (idempotent retry): the aggregate
            # in memory is not the stored one, so it must not become a snapshot.
            if self.cache is not None:
                self.cache.discard(aggregate.id)
            return
        if self.cache is not None:
            self.cache.put(aggregate)
        if not crosses_interval(old_version, aggregate.version, self.snapshot_every):
            return
        try:
            # Taken now, and copied: later commands on this object must not leak into it.
            state = copy.deepcopy(aggregate.snapshot_state())
        except Exception:  # the events are saved: a snapshot never fails the save
            log.exception("snapshot of %s/%s failed", self.aggregate_type, aggregate.id)
            return
        task = asyncio.create_task(self._snapshot(aggregate.id, aggregate.version, state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _snapshot(self, aggregate_id: str, version: int, state: dict[str, Any]) -> None:
        assert self.snapshots is not None
        try:
            await self.snapshots.save(
                self.aggregate_type,
                aggregate_id,
                version,
                state,
                self.aggregate_class.schema_version,
            )
        except Exception:
            log.exception("snapshot of %s/%s failed", self.aggregate_type, aggregate_id)

    async def drain(self) -> None:
        """Wait for the snapshots being written in the background."""
        while self._background:
            await asyncio.gather(*list(self._background))

    # ---- bulk snapshots ---------------------------------------------------------

    async def snapshot_all(self, min_events: int, progress: Progress | None = None) -> int:
        """Snapshot every aggregate of this type with at least `min_events` events.

        Returns how many snapshots were written. `progress(done, total)` is called as it goes.
        """
        if self.snapshots is None:
            raise ValueError("this repository has no snapshot store")
        ids = [
            aggregate_id
            async for aggregate_id, _ in self.store.stream_versions(
                self.aggregate_type, min_version=min_events
            )
        ]
        written = 0
        for done, aggregate_id in enumerate(ids, start=1):
            aggregate = await self._load(aggregate_id)
            if await self.snapshots.save(
                self.aggregate_type,
                aggregate_id,
                aggregate.version,
                aggregate.snapshot_state(),
                self.aggregate_class.schema_version,
            ):
                written += 1
            if progress is not None:
                progress(done, len(ids))
        return written
