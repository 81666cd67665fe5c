"""The `eventsourcing` library's recorders on esmongo's event store.

Writes go through `EventStore.append_streams`: one AppendRequest per originator, with the
library's versions as given (AppendRequest.versions: the unique index `aggregate_ordering`
is the only check, and a conflict is the store's ConcurrencyError, raised here as the
library's IntegrityError). A process recorder's tracking record is a unit-of-work write of
that same append (esmongo.store.unit_of_work): it commits with the events or not at all.
Reads are single indexed queries (tests/eventsourcing/test_query_plans.py checks each plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    Notification,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from pymongo import ASCENDING, DESCENDING

from esmongo.codec import Document
from esmongo.eventsourcing.datastore import Datastore, OwnLog, translated
from esmongo.eventsourcing.documents import (
    AGGREGATE_TYPE,
    EVENT_FIELDS,
    new_event,
    notification,
    stored_event,
)
from esmongo.eventsourcing.pages import CompletePages
from esmongo.eventsourcing.subscription import MongoSubscription
from esmongo.eventsourcing.tracking import NOTIFICATION_ID, Trackings
from esmongo.ops.backup.own_logs import declare_positions
from esmongo.store import AppendRequest, DocumentWrite, EventStore

NOTIFICATION_WINDOW = 10_000
"""The widest range of sequence one query of notifications by topic reads."""


class MongoAggregateRecorder(OwnLog, AggregateRecorder):
    """Events of aggregates in one events collection, numbered by its own sequence."""

    def create_collection(self) -> None:
        """The indexes and the sequence counter (idempotent)."""
        self.datastore.run(self.store.init())

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert(stored_events)
        return None

    def _insert(
        self, stored_events: Sequence[StoredEvent], writes: Sequence[DocumentWrite] = ()
    ) -> list[int]:
        """Append, all or nothing; the notification ids in the order of `stored_events`."""
        if not stored_events:
            return []
        requests = _requests(stored_events)
        recorded = self.datastore.run(
            self.store.append_streams(requests, writes=list(writes) or None)
        )
        self._appended(min(e.sequence for stream in recorded for e in stream))
        ids = {
            (e.aggregate_id, e.aggregate_version): e.sequence for stream in recorded for e in stream
        }
        return [ids[str(s.originator_id), s.originator_version] for s in stored_events]

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        order = DESCENDING if desc else ASCENDING
        with translated():
            found = self.reads.find(
                events_query(originator_id, gt, lte),
                EVENT_FIELDS,
                sort=[("aggregateVersion", order)],
                limit=limit or 0,
            )
            return [stored_event(doc) for doc in found]

    def _appended(self, first: int) -> None:
        """An append of this recorder committed from sequence `first` on (notification
        pages, in the application recorder, check it against what they hold)."""


class MongoApplicationRecorder(MongoAggregateRecorder, ApplicationRecorder):
    """Aggregate events plus the application sequence: notification id = `sequence`.

    Complete pages of notifications are kept and served again without a query
    (esmongo.eventsourcing.pages: they cannot change while the log is the same log)."""

    def __init__(self, datastore: Datastore, events_collection: str) -> None:
        super().__init__(datastore, events_collection)
        self.pages = CompletePages()

    def _appended(self, first: int) -> None:
        self.pages.seen(self.store.generation, head=first - 1)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._insert(stored_events)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Read in bounded ranges of sequence: a server need not stop an open range at the
        limit (the embedded one reads all of it first: docs/mongodb.md). Without topics the
        range is exact, since the sequence has no gap; with topics, windows that double
        from the limit up to NOTIFICATION_WINDOW, as far as the head."""
        if limit <= 0:
            return []
        low = 1 if start is None else start if inclusive_of_start else start + 1
        low = max(low, 1)
        with translated():
            if not topics:
                high = low + limit - 1 if stop is None else min(low + limit - 1, stop)
                return self._window(low, high, (), limit)
            head = self._head()
            top = head if stop is None else min(head, stop)
            found: list[Notification] = []
            width = max(limit, 100)
            while low <= top and len(found) < limit:
                high = min(low + width - 1, top)
                found += self._window(low, high, topics, limit - len(found))
                low = high + 1
                width = min(width * 2, NOTIFICATION_WINDOW)
            return found

    def _window(self, low: int, high: int, topics: Sequence[str], limit: int) -> list[Notification]:
        """Notifications from `low` to `high`, of `topics` (all when empty), at most `limit`.

        Topics are filtered here, not in the query: a filter on `sequence` and `eventType`
        together is a collection scan on the embedded server (docs/mongodb.md), while the
        range alone is read on the `global_sequence` index; the range is bounded anyway.
        The window is read whole, so it is sorted here: a sort, a limit or a projection
        in the query only add server work (a third of a poll's, measured on the embedded
        server: docs/eventsourcing.md), and pollers share that server with the writers."""
        if high < low:
            return []
        if not topics:
            cached = self.pages.get(low, high)
            if cached is not None:
                return cached
        epoch = self.pages.epoch()
        wanted = set(topics)
        with self.reads.find(notifications_query(low, high)) as found:
            docs = sorted(found, key=lambda doc: int(doc["sequence"]))
        notifications: list[Notification] = []
        for doc in docs:
            if wanted and doc["eventType"] not in wanted:
                continue
            notifications.append(notification(doc))
            if len(notifications) == limit:
                break
        if not topics:
            self.pages.put(low, high, notifications, epoch)
        return notifications

    def _head(self) -> int:
        """The highest committed notification id: the counter, written with the events."""
        counter = self.counter()
        head = 0 if counter is None else int(counter["value"])
        generation = None if counter is None else EventStore.counter_generation(counter)
        self.pages.seen(generation, head=head)
        return head

    def max_notification_id(self) -> int | None:
        with translated():
            return self._head() or None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return MongoSubscription(self, self.datastore, self.store, gt=gt, topics=topics)


class MongoTrackingRecorder(TrackingRecorder):
    """Tracking records: one document per upstream application, with the highest
    notification id processed (esmongo.eventsourcing.tracking)."""

    def __init__(self, datastore: Datastore, tracking_collection: str) -> None:
        self.datastore = datastore
        self.trackings = Trackings(datastore.db, tracking_collection)

    def create_collection(self) -> None:
        """Nothing to create: the `_id` index is the one a tracking document needs."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self.datastore.run(self.trackings.record(tracking))

    def insert_tracking_with(self, tracking: Tracking, writes: Sequence[DocumentWrite]) -> None:
        """The tracking record and a materialised view's writes (any collections of this
        database), in one transaction: IntegrityError, and nothing written, when the
        tracking record repeats one or comes after a higher one."""
        self.datastore.run(self.trackings.record_with(tracking, writes))

    def max_tracking_id(self, application_name: str) -> int | None:
        with translated():
            doc = self.datastore.collection(self.trackings.name).find_one({"_id": application_name})
        return None if doc is None else int(doc[NOTIFICATION_ID])


class MongoProcessRecorder(MongoTrackingRecorder, MongoApplicationRecorder, ProcessRecorder):
    """New events and the tracking record of what caused them, in one transaction."""

    def __init__(
        self, datastore: Datastore, events_collection: str, tracking_collection: str
    ) -> None:
        MongoTrackingRecorder.__init__(self, datastore, tracking_collection)
        MongoApplicationRecorder.__init__(self, datastore, events_collection)

    def create_collection(self) -> None:
        """The log's, and its tracking records declared as its positions: a backup takes
        them in the log's cut (esmongo.ops.backup.own_logs), since they commit with its events."""
        MongoApplicationRecorder.create_collection(self)
        self.datastore.run(
            declare_positions(self.datastore.db, self.store.sequence, self.trackings.name)
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return self._insert(stored_events)
        if not stored_events:
            self.insert_tracking(tracking)
            return []
        return self._insert(stored_events, [self.trackings.write(tracking)])


def events_query(originator_id: UUID | str, gt: int | None, lte: int | None) -> Document:
    """One originator's events between versions: a plain document (no `$and`), so that
    every server runs it on the `aggregate_ordering` index."""
    query: Document = {"aggregateType": AGGREGATE_TYPE, "aggregateId": str(originator_id)}
    versions: Document = {}
    if gt is not None:
        versions["$gt"] = gt
    if lte is not None:
        versions["$lte"] = lte
    if versions:
        query["aggregateVersion"] = versions
    return query


def notifications_query(low: int, high: int) -> Document:
    """Notifications from `low` to `high`: a range on `sequence` (a range on `_id` scans the
    collection on some servers: docs/mongodb.md)."""
    return {"sequence": {"$gte": low, "$lte": high}}


def _requests(stored_events: Sequence[StoredEvent]) -> list[AppendRequest]:
    """One request per originator, in the order originators first appear."""
    by_originator: dict[str, list[StoredEvent]] = {}
    for stored in stored_events:
        if not isinstance(stored.originator_version, int):
            raise ProgrammingError(
                f"originator_version of {stored.originator_id} must be an int, "
                f"not {stored.originator_version!r}"
            )
        by_originator.setdefault(str(stored.originator_id), []).append(stored)
    return [
        AppendRequest(
            AGGREGATE_TYPE,
            originator,
            [new_event(s) for s in events],
            versions=[s.originator_version for s in events],
        )
        for originator, events in by_originator.items()
    ]
