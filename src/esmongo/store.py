"""The event store: append-only `events` with a gap-free, commit-ordered global sequence.

An append is one transaction: check each stream's expected version, take a contiguous
block of sequence numbers from `counters` with `$inc`, `insert_many`. Because the counter
is written in the same transaction, a transaction that takes numbers after another one
can only commit after it: a reader that has seen sequence N has seen everything below N.
Projections depend on that invariant.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReadPreference, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from esmongo.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventValidationError,
    StreamId,
)
from esmongo.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Expected,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    utc_now,
)
from esmongo.metrics import APPEND_LATENCY, EVENTS_APPENDED
from esmongo.schema import SchemaRegistry, Upcasters

Document = dict[str, Any]

SEQUENCE_COUNTER = "event_sequence"
DURABLE = WriteConcern("majority", j=True)

EVENT_INDEXES = [
    IndexModel(
        [("aggregateType", ASCENDING), ("aggregateId", ASCENDING), ("aggregateVersion", ASCENDING)],
        unique=True,
        name="aggregate_ordering",
    ),
    IndexModel([("eventId", ASCENDING)], unique=True, name="event_id"),
    IndexModel([("sequence", ASCENDING)], unique=True, name="global_sequence"),
    IndexModel([("timestamp", ASCENDING)], name="timestamp"),
    IndexModel([("eventType", ASCENDING), ("timestamp", ASCENDING)], name="event_type_time"),
    IndexModel(
        [("metadata.correlationId", ASCENDING), ("timestamp", ASCENDING)], name="correlation"
    ),
]


@dataclass(frozen=True)
class AppendRequest:
    """Events for one stream, with what the caller expects of that stream."""

    aggregate_type: str
    aggregate_id: str
    events: Sequence[NewEvent]
    expected_version: Expected = ANY

    @property
    def stream(self) -> StreamId:
        return StreamId(self.aggregate_type, self.aggregate_id)


def check_expected(stream: StreamId, expected: Expected, actual: int) -> None:
    """Raise ConcurrencyError unless a stream at `actual` satisfies `expected`."""
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = actual == 0
    elif expected is STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = actual == expected
    if not ok:
        raise ConcurrencyError(stream, expected, actual)


def _validate_request(request: AppendRequest, registry: SchemaRegistry) -> None:
    """Everything about a request that can be checked before touching the database."""
    if not request.aggregate_type or not request.aggregate_id:
        raise ValueError("aggregate_type and aggregate_id must be non-empty strings")
    expected = request.expected_version
    if not isinstance(expected, ExpectedVersion) and (
        not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
    ):
        raise ValueError(
            f"expected_version must be an int >= 0 or ANY/NO_STREAM/STREAM_EXISTS, not {expected!r}"
        )
    for index, event in enumerate(request.events):
        if not event.event_type:
            raise ValueError(f"event #{index} on {request.stream} has no event_type")
        if not isinstance(event.data, Mapping):
            raise TypeError(f"event #{index} on {request.stream}: data must be a mapping")
        violations = registry.violations(event.event_type, event.event_version, event.data)
        if violations:
            raise EventValidationError(
                event.event_type,
                event.event_version,
                violations,
                index=index,
                stream=request.stream,
            )


class EventStore:
    """Append and read events. Create one per database and share it."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        registry: SchemaRegistry | None = None,
        upcasters: Upcasters | None = None,
        collection: str = "events",
    ) -> None:
        self.db = db
        self.registry = registry if registry is not None else SchemaRegistry()
        self.upcasters = upcasters if upcasters is not None else Upcasters()
        self.collection_name = collection
        self.events: AsyncCollection[Document] = db.get_collection(
            collection, write_concern=DURABLE
        )
        self.counters: AsyncCollection[Document] = db.get_collection(
            "counters", write_concern=DURABLE
        )

    async def init(self) -> None:
        """Create the indexes and the sequence counter. Idempotent."""
        await self.events.create_indexes(EVENT_INDEXES)
        await self.counters.update_one(
            {"_id": SEQUENCE_COUNTER}, {"$setOnInsert": {"value": 0}}, upsert=True
        )

    # ---- writes -------------------------------------------------------------------

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[NewEvent],
        expected_version: Expected = ANY,
    ) -> list[RecordedEvent]:
        """Append to one stream, atomically. Returns the events as recorded."""
        request = AppendRequest(aggregate_type, aggregate_id, list(events), expected_version)
        (recorded,) = await self.append_streams([request])
        return recorded

    async def append_streams(self, requests: Sequence[AppendRequest]) -> list[list[RecordedEvent]]:
        """Append to several streams in one transaction: all of them, or none.

        A request whose event ids were all recorded before returns those recorded events
        and writes nothing (a retried append is idempotent).
        """
        if not all(r.events for r in requests):
            written = iter(await self.append_streams([r for r in requests if r.events]))
            return [next(written) if r.events else [] for r in requests]
        if not requests:
            return []
        streams = [r.stream for r in requests]
        if len(set(streams)) != len(streams):
            raise ValueError("each stream may appear once in one append")
        ids = [e.event_id for r in requests for e in r.events]
        if len(set(ids)) != len(ids):
            raise ValueError("the events of one append must have distinct event ids")
        for request in requests:
            _validate_request(request, self.registry)

        async def write(session: AsyncClientSession) -> list[list[RecordedEvent]]:
            return await self._write(session, requests)

        started = time.perf_counter()
        try:
            async with self.db.client.start_session() as session:
                recorded = await session.with_transaction(
                    write,
                    read_concern=ReadConcern("snapshot"),
                    write_concern=DURABLE,
                    read_preference=ReadPreference.PRIMARY,
                )
            APPEND_LATENCY.observe(time.perf_counter() - started)
            EVENTS_APPENDED.inc(len(ids))
            return recorded
        except ConcurrencyError:
            earlier = await self._recorded_before(requests)
            if earlier is None:
                raise
            return earlier
        except (BulkWriteError, DuplicateKeyError) as exc:
            earlier = await self._recorded_before(requests)
            if earlier is not None:
                return earlier
            raise await self._conflict_from(exc, requests) from exc

    async def _write(
        self, session: AsyncClientSession, requests: Sequence[AppendRequest]
    ) -> list[list[RecordedEvent]]:
        heads: list[int] = []
        for request in requests:
            actual = await self._head(request.aggregate_type, request.aggregate_id, session)
            check_expected(request.stream, request.expected_version, actual)
            heads.append(actual)
        total = sum(len(r.events) for r in requests)
        counter = await self.counters.find_one_and_update(
            {"_id": SEQUENCE_COUNTER},
            {"$inc": {"value": total}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert counter is not None
        sequence = int(counter["value"]) - total
        now = utc_now()
        recorded: list[list[RecordedEvent]] = []
        for request, head in zip(requests, heads, strict=True):
            stream_events = []
            for offset, event in enumerate(request.events, start=1):
                sequence += 1
                stream_events.append(_record(request, event, head + offset, sequence, now))
            recorded.append(stream_events)
        docs = [event.to_document() for stream_events in recorded for event in stream_events]
        await self.events.insert_many(docs, ordered=True, session=session)
        return recorded

    async def _recorded_before(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[RecordedEvent]] | None:
        """The recorded events when every id of this append was recorded before, else None."""
        ids = [e.event_id for r in requests for e in r.events]
        cursor = self.events.find({"eventId": {"$in": ids}}).sort("sequence", ASCENDING)
        found = {doc["eventId"]: RecordedEvent.from_document(doc) async for doc in cursor}
        if not found:
            return None
        result = []
        for request in requests:
            events = [found.get(e.event_id) for e in request.events]
            if any(
                e is None
                or e.aggregate_type != request.aggregate_type
                or e.aggregate_id != request.aggregate_id
                for e in events
            ):
                raise DuplicateEventError(
                    f"some event ids of this append were recorded before, but not as this same "
                    f"append: {sorted(found)[:5]}"
                )
            result.append([e for e in events if e is not None])
        return result

    async def _conflict_from(
        self, exc: BulkWriteError | DuplicateKeyError, requests: Sequence[AppendRequest]
    ) -> Exception:
        """Turn a unique-index violation into the ConcurrencyError it stands for."""
        details: Mapping[str, Any] = exc.details or {}
        errors = details.get("writeErrors") or [details]
        key = errors[0].get("keyValue") or {} if errors else {}
        if "aggregateId" in key:
            stream = StreamId(key.get("aggregateType", ""), key["aggregateId"])
            for request in requests:
                if request.stream == stream:
                    actual = await self.stream_version(stream.aggregate_type, stream.aggregate_id)
                    return ConcurrencyError(stream, request.expected_version, actual)
        return exc

    # ---- reads --------------------------------------------------------------------

    async def _head(
        self, aggregate_type: str, aggregate_id: str, session: AsyncClientSession | None = None
    ) -> int:
        doc = await self.events.find_one(
            {"aggregateType": aggregate_type, "aggregateId": aggregate_id},
            projection={"aggregateVersion": 1, "_id": 0},
            sort=[("aggregateVersion", DESCENDING)],
            session=session,
        )
        return int(doc["aggregateVersion"]) if doc else 0

    async def stream_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """The stream's current version; 0 when it has no event."""
        return await self._head(aggregate_type, aggregate_id)

    async def head_sequence(self) -> int:
        """The highest committed sequence number (0 on an empty store)."""
        doc = await self.counters.find_one({"_id": SEQUENCE_COUNTER})
        return int(doc["value"]) if doc else 0

    def _events(
        self, query: Document, sort: list[tuple[str, int]], limit: int, batch_size: int
    ) -> AsyncIterator[RecordedEvent]:
        cursor = self.events.find(query, sort=sort, limit=limit, batch_size=batch_size)
        return self._decode(cursor)

    async def _decode(self, cursor: Any) -> AsyncIterator[RecordedEvent]:
        upcast = self.upcasters.upcast if self.upcasters else None
        async with cursor:
            async for doc in cursor:
                event = RecordedEvent.from_document(doc)
                yield upcast(event) if upcast else event

    def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        batch_size: int = 1000,
    ) -> AsyncIterator[RecordedEvent]:
        """One stream's events in version order, from and to versions inclusive."""
        versions: Document = {"$gte": from_version}
        if to_version is not None:
            versions["$lte"] = to_version
        query = {
            "aggregateType": aggregate_type,
            "aggregateId": aggregate_id,
            "aggregateVersion": versions,
        }
        return self._events(query, [("aggregateVersion", ASCENDING)], 0, batch_size)

    def read_all(
        self,
        after_sequence: int = 0,
        limit: int = 0,
        *,
        event_types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        correlation_id: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RecordedEvent]:
        """Events after a sequence number, in global order; `limit` 0 means no limit.

        Optional filters: event types, a time window [start, end), a correlation id. Paging
        by sequence (pass the last sequence seen) is stable while events are appended.
        """
        query: Document = {"sequence": {"$gt": after_sequence}}
        if event_types is not None:
            types = list(event_types)
            query["eventType"] = types[0] if len(types) == 1 else {"$in": types}
        window: Document = {}
        if start is not None:
            window["$gte"] = start
        if end is not None:
            window["$lt"] = end
        if window:
            query["timestamp"] = window
        if correlation_id is not None:
            query["metadata.correlationId"] = correlation_id
        return self._events(query, [("sequence", ASCENDING)], limit, batch_size)

    def read_by_type(
        self,
        event_types: str | Sequence[str],
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        limit: int = 0,
        batch_size: int = 1000,
    ) -> AsyncIterator[RecordedEvent]:
        """Events of some types in a time window [start, end), in time order."""
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        query: Document = {"eventType": types[0] if len(types) == 1 else {"$in": types}}
        window: Document = {}
        if start is not None:
            window["$gte"] = start
        if end is not None:
            window["$lt"] = end
        if window:
            query["timestamp"] = window
        sort = [("timestamp", ASCENDING), ("sequence", ASCENDING)]
        return self._events(query, sort, limit, batch_size)

    def read_by_correlation(
        self, correlation_id: str, *, limit: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event of one request or saga, in time order."""
        query = {"metadata.correlationId": correlation_id}
        sort = [("timestamp", ASCENDING), ("sequence", ASCENDING)]
        return self._events(query, sort, limit, batch_size)


def _record(
    request: AppendRequest, event: NewEvent, version: int, sequence: int, now: datetime
) -> RecordedEvent:
    timestamp = event.timestamp or now
    return RecordedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        event_version=event.event_version,
        aggregate_type=request.aggregate_type,
        aggregate_id=request.aggregate_id,
        aggregate_version=version,
        data=event.data,
        metadata={**event.metadata, "timestamp": timestamp},
        timestamp=timestamp,
        sequence=sequence,
    )
