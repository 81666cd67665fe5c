"""The event store: append-only `events` with a gap-free, commit-ordered global sequence.

An append is written in one transaction: take a contiguous block of sequence numbers from
`counters` with `$inc`, `insert_many`. Because the counter is written in the same
transaction, a transaction that takes numbers after another one can only commit after it:
a reader that has seen sequence N has seen everything below N. Projections depend on that.

Concurrent appends share such transactions (group commit: esmongo.store.group_commit forms the
batches, esmongo.store.batch_writer writes them); an append whose stream conflicts is taken out
of its batch and told, and the rest commit. Expected versions are checked in two halves
(esmongo.store.stream_versions): "the expected version exists" before the transaction, "the next
version does not" by the unique index as the transaction inserts it.
docs/adr/0002-group-commit.md says why, and what was measured.

A closed stream can be archived (`archive_stream`, esmongo.store.archive): moved whole to
`events_archive`. Every read finds it there: streams, the global order (still gap-free),
by type, by correlation, by id; appends to it are refused with StreamArchived.
"""

from __future__ import annotations

import asyncio
import decimal
import time
from collections.abc import Sequence
from typing import Any

import bson
from bson.binary import Binary
from bson.codec_options import CodecOptions, TypeRegistry
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import ANY, Expected, NewEvent, RecordedEvent, StreamId
from esmongo.metrics import APPEND_LATENCY
from esmongo.schema.registry import SchemaRegistry, Upcasters
from esmongo.store import fence
from esmongo.store.archive import Archive, ArchiveReport
from esmongo.store.batch_writer import BatchWriter
from esmongo.store.collections import ARCHIVE, ARCHIVED_STREAMS, COUNTERS, own_archive
from esmongo.store.conditions import AppendCondition
from esmongo.store.data_keys import DataKeys, MasterKeys
from esmongo.store.group_commit import GroupCommit
from esmongo.store.inline import InlineProjection, InlineSwitch
from esmongo.store.layout import ensure_indexes, log_database
from esmongo.store.pending import PendingAppend, WriteStats
from esmongo.store.personal import PersonalData, Sealed
from esmongo.store.queries import EventQueries
from esmongo.store.reads import EventReads
from esmongo.store.requests import AppendRequest, validate_request
from esmongo.store.stream_versions import StreamVersions
from esmongo.store.transactions import DURABLE, SEQUENCE_COUNTER
from esmongo.store.unit_of_work import Writes
from esmongo.store.writers import Liveness, Writers

MAX_BATCH_EVENTS = 500
"""Events in one group-commit transaction, at most (a bigger single append goes alone)."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Estimated bytes in one group-commit transaction, at most."""
EVENT_OVERHEAD_BYTES = 300
"""An event document's bytes besides its data and metadata, for the batch estimate."""
_DECIMAL_SIZE = Binary(bytes(16))
SIZING: CodecOptions[Document] = CodecOptions(
    type_registry=TypeRegistry(
        fallback_encoder=lambda v: _DECIMAL_SIZE if isinstance(v, decimal.Decimal) else v
    )
)
"""Encodes an event's data for its size only: a Decimal as 16 bytes (a few more than its
Decimal128), without the conversion that costs 4x the rest of the encoding."""

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


class EventStore(EventReads, EventQueries):
    """Append and read events. Create one per database and share it.

    With `group_commit` (the default), concurrent appends made through this object are
    written together, one transaction per batch (see esmongo.store.group_commit); a batch holds
    at most `max_batch_events` events and about `max_batch_bytes` bytes. Without it, each
    append runs its own transaction. Callers see the same API and results either way.
    `liveness` says how this process's writer heartbeat works and when another writer's
    stops counting as alive (esmongo.store.writers: a dead writer's open transaction is killed).
    `keys`: the data keys that encrypt personal fields (esmongo.store.personal); by default
    wrapped by the master keys in `ESMONGO_MASTER_KEY` (none set: personal data in clear).
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        registry: SchemaRegistry | None = None,
        upcasters: Upcasters | None = None,
        collection: str = "events",
        group_commit: bool = True,
        max_batch_events: int = MAX_BATCH_EVENTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        liveness: Liveness | None = None,
        sequence: str = SEQUENCE_COUNTER,
        log_db: AsyncDatabase[Document] | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self.db = db
        self.log_db = log_db if log_db is not None else db
        """Where the events collection and the archive live: `db` unless the deployment
        keeps its log in a database of its own (esmongo.store.layout; Application.init and
        `EventStore.open` find it)."""
        self.registry = registry if registry is not None else SchemaRegistry()
        self.keys = keys if keys is not None else DataKeys(db, MasterKeys.from_env())
        self.personal = PersonalData(self.keys, self.registry)
        self.upcasters = upcasters if upcasters is not None else Upcasters()
        self.collection_name = collection
        self.sequence = sequence
        """The `_id` of the counter document numbering this log. Another name than the
        default makes a log of its own (an `eventsourcing` application's: its own gap-free
        sequence beside others in one database), outside migrations and archiving."""
        self.events: AsyncCollection[Document] = self.log_db.get_collection(
            collection, write_concern=DURABLE
        )
        self.counters: AsyncCollection[Document] = db.get_collection(
            COUNTERS, write_concern=DURABLE
        )
        self.versions = StreamVersions(self.events)
        self.writers = Writers(db, liveness)
        own = sequence != SEQUENCE_COUNTER
        self.archive = Archive(
            db,
            self.events,
            self.counters,
            self.writers,
            names=own_archive(collection) if own else (ARCHIVE, ARCHIVED_STREAMS),
            log_db=self.log_db,
        )
        self._writer = BatchWriter(
            db.client,
            self.events,
            self.counters,
            self.versions,
            self.archive,
            self.writers,
            counter_id=sequence,
        )
        self.inline = InlineSwitch(self.counters, sequence)
        """Which projections are inline (esmongo.store.inline)."""
        self._group: GroupCommit[PendingAppend] | None = (
            GroupCommit(self._writer.flush, max_events=max_batch_events, max_bytes=max_batch_bytes)
            if group_commit
            else None
        )

    @classmethod
    async def open(cls, db: AsyncDatabase[Document], **options: Any) -> EventStore:
        """A store on `db`'s active events collection, in the database that holds its log
        (esmongo.store.layout): what a tool that does not know the layout opens."""
        if "collection" not in options:
            options["collection"] = await fence.active_name(db)
        return cls(db, log_db=await log_database(db), **options)

    @property
    def group_commit(self) -> bool:
        return self._group is not None

    @property
    def stats(self) -> WriteStats:
        """Counts of what the write path did (transactions, appends, retries)."""
        return self._writer.stats

    @property
    def generation(self) -> fence.Generation | None:
        """The log counter's generation as this store's last append transaction read it
        (None: none yet). It moves when events may have left the log (an archive, a repair,
        a fence closing, a restore, a drop found by `init`): esmongo.store.fence."""
        return self.versions.generation

    @staticmethod
    def counter_generation(counter: Document) -> fence.Generation:
        """The generation a counter document read elsewhere says (the same tuple)."""
        return fence.generation(counter)

    def register_inline(self, projection: InlineProjection) -> None:
        """Apply `projection` in every append transaction of this store while the counter
        says it is inline (esmongo.store.inline; esmongo.projections.inline builds these)."""
        self._writer.inline.registered[projection.name] = projection

    @property
    def inline_registered(self) -> frozenset[str]:
        """The inline projections this store applies."""
        return frozenset(self._writer.inline.registered)

    def inline_applied_through(self, name: str) -> int:
        """The last sequence of a batch this store committed with projection `name`
        applied inline (0: none): its read model held every event up to there."""
        return self._writer.inline.through.get(name, 0)

    async def init(self) -> None:
        """Create the indexes (archive included) and the sequence counter (with its write
        fence, esmongo.store.fence). Idempotent.

        An events collection missing while the counter exists was dropped under the store:
        `restores` on its counter (this log's own, for a log numbered by one) moves, so
        that no process trusts a head it wrote there (esmongo.store.fence.generation)."""
        await self.keys.init()
        if not await self.log_db.list_collection_names(filter={"name": self.events.name}):
            await self.counters.update_one({"_id": self.sequence}, {"$inc": {fence.RESTORES: 1}})
        await ensure_indexes(self.events, EVENT_INDEXES)
        if self.sequence != SEQUENCE_COUNTER:  # a log of its own: the fence is its collection
            await self.counters.update_one(
                {"_id": self.sequence},
                {
                    "$setOnInsert": {
                        "value": 0,
                        fence.WRITABLE: self.collection_name,
                        **fence.incarnation(),
                    }
                },
                upsert=True,
            )
            await self.writers.sweep()
            return
        await self.archive.init(EVENT_INDEXES)
        await self.counters.update_one(
            {"_id": SEQUENCE_COUNTER},
            {"$setOnInsert": {"value": 0, **fence.incarnation()}},
            upsert=True,
        )
        await self.writers.sweep()  # a predecessor that died inside an append
        await fence.adopt(self.db, self.collection_name)

    # ---- writes -------------------------------------------------------------------

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[NewEvent],
        expected_version: Expected = ANY,
        *,
        writes: Writes | None = None,
    ) -> list[RecordedEvent]:
        """Append to one stream, atomically. Returns the events as recorded.

        `writes`: other documents that commit with these events or not at all
        (esmongo.store.unit_of_work)."""
        request = AppendRequest(aggregate_type, aggregate_id, list(events), expected_version)
        (recorded,) = await self.append_streams([request], writes=writes)
        return recorded

    async def append_streams(
        self,
        requests: Sequence[AppendRequest],
        *,
        writes: Writes | None = None,
        condition: AppendCondition | None = None,
    ) -> list[list[RecordedEvent]]:
        """Append to several streams in one transaction: all of them, or none.

        A request whose event ids were all recorded before returns those recorded events
        (upcast, like every read) and writes nothing, `writes` included: a retried append
        is idempotent, and the first one committed its writes. `condition` is checked in
        the transaction (esmongo.store.conditions): AppendConditionFailed when it refuses.
        """
        if not all(r.events for r in requests):
            kept = [r for r in requests if r.events]
            if not kept and writes is not None:
                raise ValueError("writes need at least one event to commit with")
            written = iter(await self.append_streams(kept, writes=writes, condition=condition))
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
            validate_request(request, self.registry)
        sealed = await self.personal.seal(requests)  # after validation, before the chain
        if sealed is not None:
            requests = sealed.requests

        started = time.perf_counter()
        pending = PendingAppend(
            requests=list(requests),
            future=asyncio.get_running_loop().create_future(),
            keys=frozenset(streams),
            count=len(ids),
            size=self._estimate_size(requests) if self._group is not None else 0,
            writes=writes,
            condition=condition,
            clear=sealed.reveal if sealed is not None else None,
        )
        if self._group is not None:
            self._group.submit(pending)
        else:
            await self._writer.flush([pending])
        recorded = await pending.future
        APPEND_LATENCY.observe(time.perf_counter() - started)
        if sealed is not None or any(e.replayed for events in recorded for e in events):
            recorded = [[await self._clear(e, sealed) for e in events] for events in recorded]
        if self.upcasters and any(e.replayed for events in recorded for e in events):
            return [[self.upcasters.upcast(e) for e in events] for events in recorded]
        return recorded

    async def _clear(self, event: RecordedEvent, sealed: Sealed | None) -> RecordedEvent:
        """What the append returns: the clear values it was given, or for an event recorded
        before (a retry), the stored one decrypted."""
        if event.replayed:
            return await self.personal.reveal(event)
        return sealed.reveal(event) if sealed is not None else event

    def _estimate_size(self, requests: Sequence[AppendRequest]) -> int:
        """Bytes the events take in BSON, near enough to bound a batch."""
        return sum(
            EVENT_OVERHEAD_BYTES
            + len(bson.encode({"d": e.data, "m": e.metadata}, codec_options=SIZING))
            for r in requests
            for e in r.events
        )

    async def archive_stream(
        self, aggregate_type: str, aggregate_id: str, expected_version: int | None = None
    ) -> ArchiveReport:
        """Move a stream whole to `events_archive`, in one transaction (esmongo.store.archive).

        It stays readable everywhere and takes no more events (StreamArchived). Its
        snapshot, if any, is kept and no longer expires. Idempotent: archiving it again
        returns the first archive's record with `already=True`. AggregateNotFoundError
        when it has no event; ConcurrencyError when it is not at `expected_version`.
        """
        if self.sequence != SEQUENCE_COUNTER:
            raise ValueError(
                f"archiving is for the database's main log, not {self.collection_name} "
                f"(numbered by its own sequence {self.sequence!r})"
            )
        stream = StreamId(aggregate_type, aggregate_id)
        report = await self.archive.archive_stream(stream, expected_version)
        self.versions.forget(stream)
        return report

    async def archived(self, aggregate_type: str, aggregate_id: str) -> ArchiveReport | None:
        """The archive record of a stream, or None when it is not archived."""
        return await self.archive.find(StreamId(aggregate_type, aggregate_id))
