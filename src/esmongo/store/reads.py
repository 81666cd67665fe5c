"""The read path: streams, the global order, by type and time, by correlation, by position.

Every read merges the active events collection with the archive (esmongo.store.archive) and
upcasts what it returns; nothing is ever loaded whole (cursors, in batches).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.events import RecordedEvent, StreamId
from esmongo.schema.registry import Upcasters
from esmongo.store.archive import Archive, merged
from esmongo.store.personal import PersonalData
from esmongo.store.stream_versions import StreamVersions

KEYS_PREFETCHED = 100
"""Events read ahead of the caller so that their data keys are fetched in one read
(esmongo.store.personal): a cursor's batch is bigger, so this adds no round trip."""


class EventReads:
    """The reads of an EventStore (its base class): what a reader needs, in one place."""

    events: AsyncCollection[Document]
    counters: AsyncCollection[Document]
    sequence: str
    archive: Archive
    versions: StreamVersions
    upcasters: Upcasters
    personal: PersonalData

    async def stream_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """The stream's current version; 0 when it has no event."""
        stream = StreamId(aggregate_type, aggregate_id)
        version = await self.versions.head(stream)
        if version == 0:
            record = await self.archive.find(stream)
            return record.version if record else 0
        return version

    async def head_sequence(self) -> int:
        """The highest committed sequence number (0 on an empty store)."""
        doc = await self.counters.find_one({"_id": self.sequence})
        return int(doc["value"]) if doc else 0

    async def watch(
        self,
        event_types: Iterable[str] | None = None,
        *,
        resume_after: Mapping[str, Any] | None = None,
        max_await_ms: int = 1000,
    ) -> AsyncChangeStream[Document]:
        """A change stream of the appends of these event types (None: every type), to wake
        readers up.

        Each change carries only `fullDocument.eventType` and `fullDocument.sequence`: a
        reader woken by it reads by sequence (read_all), which is what it can trust, so the
        stream needs no event data. Filtered on the server. The active collection only:
        archiving moves old events, it appends none. `resume_after` is the `resume_token`
        of an earlier stream; the server refuses it when that history has left the oplog.
        """
        match: Document = {"operationType": "insert"}
        if event_types is not None:
            match["fullDocument.eventType"] = {"$in": sorted(set(event_types))}
        pipeline: list[Document] = [
            {"$match": match},
            {"$project": {"fullDocument.eventType": 1, "fullDocument.sequence": 1}},
        ]
        return await self.events.watch(
            pipeline, resume_after=resume_after, max_await_time_ms=max_await_ms
        )

    def query_events(
        self,
        query: Document,
        sort: list[tuple[str, int]],
        range_field: str,
        *,
        limit: int = 0,
        batch_size: int = 1000,
        hint: list[tuple[str, int]] | None = None,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Events matching a raw filter, from the active collection and the archive, in
        `sort` order (ascending, ending in a unique key), each once, upcast.

        `range_field` is the first sort field the filter does not fix
        (esmongo.store.archive.merged).
        """
        docs = merged(
            self.events,
            self.archive.events,
            query,
            sort,
            range_field,
            limit=limit,
            chunk=batch_size,
            hint=hint,
        )
        return self._decode(docs, ahead=batch_size)

    async def _decode(
        self,
        docs: AsyncIterator[Document],
        remember: StreamId | None = None,
        *,
        ahead: int = KEYS_PREFETCHED,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Decode, decrypt and upcast; note the last event of a stream read (the next
        append's check). With a master key, up to `ahead` events (at most KEYS_PREFETCHED:
        no more than the read's own batches) are read before their keys are fetched."""
        upcast = self.upcasters.upcast if self.upcasters else None
        last: Document | None = None
        size = max(1, min(ahead, KEYS_PREFETCHED)) if self.personal.keys.master else 1
        try:
            async for chunk in _chunks(docs, size):
                if size > 1:
                    await self.personal.prefetch(chunk)  # one read of keys per chunk, at most
                for doc in chunk:
                    last = doc
                    event = await self.personal.reveal(RecordedEvent.from_document(doc))
                    yield upcast(event) if upcast else event
        finally:
            if remember is not None and last is not None:
                self.versions.remember(remember, last["aggregateVersion"], last["sequence"])
            close = getattr(docs, "aclose", None)
            if close is not None:  # a merged read's cursors, when the caller stopped early
                await close()

    async def event_at(self, sequence: int) -> RecordedEvent | None:
        """The event at a global sequence number (upcast), or None: the active collection,
        then the archive."""
        doc = await self.events.find_one({"sequence": sequence})
        if doc is None:
            doc = await self.archive.events.find_one({"sequence": sequence})
        if doc is None:
            return None
        event = await self.personal.reveal(RecordedEvent.from_document(doc))
        return self.upcasters.upcast(event) if self.upcasters else event

    async def find_event(self, event_id: str) -> RecordedEvent | None:
        """The event recorded with this id (upcast), or None: the unique `eventId` index
        of the active collection, then of the archive."""
        doc = await self.events.find_one({"eventId": event_id})
        if doc is None:
            doc = await self.archive.events.find_one({"eventId": event_id})
        if doc is None:
            return None
        event = await self.personal.reveal(RecordedEvent.from_document(doc))
        return self.upcasters.upcast(event) if self.upcasters else event

    async def stored_document(self, event_id: str) -> Document | None:
        """The event's document exactly as stored (not upcast), active or archived: what
        an operator compares with the upcast event."""
        doc = await self.events.find_one({"eventId": event_id})
        if doc is None:
            doc = await self.archive.events.find_one({"eventId": event_id})
        return doc

    def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        batch_size: int = 1000,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """One stream's events in version order, from and to versions inclusive.

        A stream lives wholly in one collection: the archive is read only when the active
        collection has none of these events. A read that overlaps the archiving of its own
        stream may end early (a prefix: a state the stream was in), never mix the two.
        """
        versions: Document = {"$gte": from_version}
        if to_version is not None:
            versions["$lte"] = to_version
        query = {
            "aggregateType": aggregate_type,
            "aggregateId": aggregate_id,
            "aggregateVersion": versions,
        }
        stream = StreamId(aggregate_type, aggregate_id)
        return self._read_stream(stream, query, batch_size)

    async def _read_stream(
        self, stream: StreamId, query: Document, batch_size: int
    ) -> AsyncGenerator[RecordedEvent, None]:
        sort = [("aggregateVersion", ASCENDING)]
        found = False
        active = self.events.find(query, sort=sort, batch_size=batch_size)
        async with active:
            async for event in self._decode(_documents(active), stream, ahead=batch_size):
                found = True
                yield event
        if found:
            return
        archived = self.archive.events.find(query, sort=sort, batch_size=batch_size)
        async with archived:
            async for event in self._decode(_documents(archived), ahead=batch_size):
                yield event

    def read_all(
        self,
        after_sequence: int = 0,
        limit: int = 0,
        *,
        event_types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        correlation_id: str | None = None,
        through: int | None = None,
        batch_size: int = 1000,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Events after a sequence number, in global order; `limit` 0 means no limit.

        Optional filters: event types, a time window [start, end), a correlation id, and
        `through`, the last sequence wanted. Give `through` when you know it: the server
        then reads only that range, where an open range costs work in proportion to
        everything after `after_sequence` (docs/adr/0007). Without filters, a `limit`
        bounds the range by itself. Paging by sequence (pass the last sequence seen) is
        stable while events are appended. Archived events
        are merged in: the sequence stays gap-free (esmongo.store.archive.merged).
        """
        unfiltered = event_types is None and start is None and end is None
        if through is None and limit and unfiltered and correlation_id is None:
            # The sequence has no gaps: the next `limit` events are at most this far.
            through = after_sequence + limit
        bounds: Document = {"$gt": after_sequence}
        if through is not None:
            bounds["$lte"] = through
        query: Document = {"sequence": bounds}
        if event_types is not None:
            types = list(event_types)
            query["eventType"] = types[0] if len(types) == 1 else {"$in": types}
        query.update(_time_window(start, end))
        if correlation_id is not None:
            query["metadata.correlationId"] = correlation_id
        sort = [("sequence", ASCENDING)]
        return self.query_events(query, sort, "sequence", limit=limit, batch_size=batch_size)

    def read_by_type(
        self,
        event_types: str | Sequence[str],
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int = 0,
        batch_size: int = 1000,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Events of some types in a time window [start, end), in time order."""
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        query: Document = {"eventType": types[0] if len(types) == 1 else {"$in": types}}
        query.update(_time_window(start, end))
        sort = [("timestamp", ASCENDING), ("sequence", ASCENDING)]
        return self.query_events(query, sort, "timestamp", limit=limit, batch_size=batch_size)

    def read_by_correlation(
        self, correlation_id: str, *, limit: int = 0, batch_size: int = 1000
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Every event of one request or saga, in time order."""
        query = {"metadata.correlationId": correlation_id}
        sort = [("timestamp", ASCENDING), ("sequence", ASCENDING)]
        return self.query_events(query, sort, "timestamp", limit=limit, batch_size=batch_size)


async def _chunks(docs: AsyncIterator[Document], size: int) -> AsyncIterator[list[Document]]:
    """Up to `size` documents at a time, as they come."""
    chunk: list[Document] = []
    async for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _documents(cursor: Any) -> AsyncIterator[Document]:
    async for doc in cursor:
        yield doc


def _time_window(start: datetime | None, end: datetime | None) -> Document:
    """The filter on `timestamp` for [start, end); empty when both are open."""
    window: Document = {}
    if start is not None:
        window["$gte"] = start
    if end is not None:
        window["$lt"] = end
    return {"timestamp": window} if window else {}
