"""The DCB ("dynamic consistency boundary") recorder of the `eventsourcing` library.

A DCB application appends tagged events to one log, on condition that no event matching a
query was recorded after the position it read up to. Its log is an esmongo log of its own
(`<app>_events`, numbered by its counter): position = `sequence`, gap-free, in commit
order. An append is one esmongo append (one stream of its own, `aggregateType`
AGGREGATE_TYPE), and its condition is checked in that append's transaction
(esmongo.store.conditions): the check and the insert are atomic, and concurrent appends
still share transactions (group commit). A failed condition is the library's
IntegrityError. Queries are index scans (esmongo.eventsourcing.dcb_queries).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
)
from eventsourcing.dcb.persistence import DCBListenNotifySubscription
from eventsourcing.persistence import ProgrammingError
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.events import NewEvent
from esmongo.eventsourcing.datastore import OwnLog, translated
from esmongo.eventsourcing.dcb_queries import DCB_INDEXES, FIELDS, TAGS, Scan, scans
from esmongo.eventsourcing.documents import EVENT_VERSION, STATE
from esmongo.eventsourcing.subscription import ChangeWaker
from esmongo.store import AppendRequest
from esmongo.store.layout import ensure_indexes

AGGREGATE_TYPE = "eventsourcing.dcb"
"""`aggregateType` of a DCB event; `aggregateId` is a new id for each append."""


class MongoDCBRecorder(OwnLog, DCBRecorder):
    """One DCB application's log: writes on the factory's loop, reads in the caller's thread."""

    def create_collection(self) -> None:
        """esmongo's indexes and counter, and the DCB query indexes (idempotent)."""
        self.datastore.run(self._create())

    async def _create(self) -> None:
        await self.store.init()
        await ensure_indexes(self.store.events, DCB_INDEXES)  # the writer may not createIndex

    def append(
        self, events: Sequence[DCBEvent], condition: DCBAppendCondition | None = None
    ) -> int:
        if not events:
            raise ProgrammingError("a DCB append needs at least one event")
        request = AppendRequest(
            AGGREGATE_TYPE,
            str(uuid.uuid4()),
            [new_event(e, i) for i, e in enumerate(events)],
            versions=list(range(1, len(events) + 1)),
        )
        checked = None if condition is None else Condition(condition)
        recorded = self.datastore.run(self.store.append_streams([request], condition=checked))
        return recorded[0][-1].sequence

    def read(
        self,
        query: DCBQuery | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
    ) -> DCBReadResponse:
        """Events after `after` matching `query`, in order. The head (the log's last
        position) is read first and bounds the read: an append conditioned on it then
        catches anything recorded since, including what this read did not see."""
        if limit is not None and limit <= 0:
            return ReadResponse([], None)
        with translated():
            head = self._head()
            low, high = (after or 0) + 1, head
            if limit is not None:
                found = self._find(query, low, high, limit)
                return ReadResponse(found, found[-1].position if found else None)
            return ReadResponse(self._find(query, low, high, None), head or None)

    def _head(self) -> int:
        counter = self.counter()
        return 0 if counter is None else int(counter["value"])

    def _find(
        self, query: DCBQuery | None, low: int, high: int, limit: int | None
    ) -> list[DCBSequencedEvent]:
        if high < low:
            return []
        planned = scans(query, low, high)
        if planned is None:  # every position of the range: exact, since it has no gap
            top = high if limit is None else min(high, low + limit - 1)
            planned = [Scan({"sequence": {"$gte": low, "$lte": top}})]
        runs = [self._scan(scan, limit) for scan in planned]
        merged: list[DCBSequencedEvent] = []
        for event in heapq.merge(*runs, key=lambda e: e.position):
            if merged and merged[-1].position == event.position:
                continue  # it matched two items
            merged.append(event)
            if limit is not None and len(merged) == limit:
                break
        return merged

    def _scan(self, scan: Scan, limit: int | None) -> list[DCBSequencedEvent]:
        found: list[DCBSequencedEvent] = []
        server_limit = limit if limit is not None and scan.exact else 0
        with self.reads.find(
            scan.filter, FIELDS, sort=[("sequence", ASCENDING)], limit=server_limit
        ) as cursor:
            for doc in cursor:
                if scan.matches(doc):
                    found.append(sequenced_event(doc))
                    if limit is not None and len(found) == limit:
                        break
        return found

    def subscribe(
        self, query: DCBQuery | None = None, *, after: int | None = None
    ) -> MongoDCBSubscription:
        return MongoDCBSubscription(self, query=query, after=after)


class Condition:
    """A DCBAppendCondition, checked in the append's transaction (AppendCondition)."""

    def __init__(self, condition: DCBAppendCondition) -> None:
        self.query = condition.fail_if_events_match
        self.after = condition.after or 0

    async def refusal(
        self, events: AsyncCollection[Document], before: int, session: AsyncClientSession
    ) -> int | None:
        low, high = self.after + 1, before - 1
        if high < low:
            return None
        planned = scans(self.query, low, high)
        if planned is None:
            return low  # every event of the range matches, and the range has `low`
        lowest: int | None = None
        for scan in planned:
            cursor = events.find(
                scan.filter,
                FIELDS,
                sort=[("sequence", ASCENDING)],
                limit=1 if scan.exact else 0,
                session=session,
            )
            async with cursor:
                async for doc in cursor:
                    if scan.matches(doc):
                        sequence = int(doc["sequence"])
                        lowest = sequence if lowest is None else min(lowest, sequence)
                        break
        return lowest


class ReadResponse(DCBReadResponse):
    def __init__(self, events: list[DCBSequencedEvent], head: int | None) -> None:
        self._events: Iterator[DCBSequencedEvent] = iter(events)
        self._head = head

    @property
    def head(self) -> int | None:
        return self._head

    def __next__(self) -> DCBSequencedEvent:
        return next(self._events)


class MongoDCBSubscription(DCBListenNotifySubscription[MongoDCBRecorder]):
    """Pulls with `read`, woken by a change stream of the log's inserts."""

    def __init__(
        self, recorder: MongoDCBRecorder, query: DCBQuery | None = None, after: int | None = None
    ) -> None:
        self._waker = ChangeWaker(recorder.datastore, recorder.store, ())
        super().__init__(recorder=recorder, query=query, after=after)
        self._waker.start(self._has_been_notified, self._broke)

    def _broke(self, exc: Exception) -> None:
        if self._thread_error is None:
            self._thread_error = exc
        DCBListenNotifySubscription.stop(self)

    def stop(self) -> None:
        super().stop()
        self._waker.close()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        super().__exit__(*args, **kwargs)


def new_event(event: DCBEvent, index: int) -> NewEvent:
    if not isinstance(event.data, bytes):
        raise TypeError(
            f"DCB event #{index} ({event.type}): data is a {type(event.data).__name__}, not bytes"
        )
    if not isinstance(event.tags, list) or not all(isinstance(t, str) for t in event.tags):
        raise TypeError(
            f"DCB event #{index} ({event.type}): tags must be a list of str, not {event.tags!r}"
        )
    return NewEvent(event.type, {STATE: event.data, TAGS: list(event.tags)}, EVENT_VERSION)


def sequenced_event(doc: Mapping[str, Any]) -> DCBSequencedEvent:
    return DCBSequencedEvent(
        event=DCBEvent(
            type=doc["eventType"], data=bytes(doc["data"][STATE]), tags=list(doc["data"][TAGS])
        ),
        position=int(doc["sequence"]),
    )
