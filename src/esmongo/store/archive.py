"""Archiving a closed stream: moved whole, in one transaction, to `events_archive`.

Nothing is deleted from the truth: the stream's events are inserted unchanged (same `_id` =
sequence, ids, versions, metadata, time) into `events_archive` and removed from the active
events collection in the same transaction, which also records the stream in
`archived_streams` and makes its snapshot permanent (the snapshot is only a cache, but it
is the cheap way to load a closed account, so it no longer expires).

The transaction also increments `archives` on the sequence counter document (never the
sequence itself). Every append transaction increments that document too, so an archive
write-conflicts with every concurrent append and the two are serialized: an append can
never add a version to a stream while it is being moved, and the batch writer learns from
the counter, for free, whether any stream was archived since it checked its versions.

Reads find archived events where they are: `merged` reads both collections in one order
(see its docstring for why nothing can be skipped while a stream moves). A stream lives
wholly in one collection, so a stream read looks in the archive only when the active
collection has nothing for it. docs/archiving.md and docs/adr/0006-archiving.md say more.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
)
from esmongo.events import StreamId, utc_now
from esmongo.store.collections import (
    ARCHIVE,
    ARCHIVED_STREAMS,
    SNAPSHOTS,
)
from esmongo.store.fence import ARCHIVES, refuse_unless_writable
from esmongo.store.layout import ensure_indexes
from esmongo.store.transactions import DURABLE, bump_counter, run_in_transaction
from esmongo.store.writers import Writers

ARCHIVES_FIELD = ARCHIVES
"""On the sequence counter document: how many archives committed (each one's `number`)."""
MIRROR_CAPACITY = 500_000
"""Archived streams an Archive keeps in memory (about 200 bytes each) for the write path."""
PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step ("merged:page": `merged` has read a page of
the active collection, before it looks at the archive), to make a race with an archive
deterministic."""
ARCHIVE_READS = {"read": 0, "skipped": 0}
"""How many archive reads `merged` made and skipped (for tests and benchmarks)."""


def registry_key(stream: StreamId) -> Document:
    """`_id` of a stream in `archived_streams` (fields in this order, always)."""
    return {"type": stream.aggregate_type, "id": stream.aggregate_id}


@dataclass(frozen=True)
class ArchiveReport:
    """What `archive_stream` moved, or found moved before (`already`)."""

    stream: StreamId
    version: int
    """The stream's last version (it never changes again)."""
    events: int
    first_sequence: int
    last_sequence: int
    archived_at: datetime
    number: int
    """This archive's place in the order of all archives (the counter's `archives`)."""
    snapshot_kept: bool
    """A snapshot of the stream existed and was made permanent."""
    already: bool = False
    """The stream was archived before: nothing was done now."""
    elapsed_s: float = 0.0

    @classmethod
    def of(cls, doc: Document, *, already: bool, elapsed_s: float = 0.0) -> ArchiveReport:
        return cls(
            stream=StreamId(doc["aggregateType"], doc["aggregateId"]),
            version=int(doc["version"]),
            events=int(doc["events"]),
            first_sequence=int(doc["firstSequence"]),
            last_sequence=int(doc["lastSequence"]),
            archived_at=doc["archivedAt"],
            number=int(doc["number"]),
            snapshot_kept=bool(doc.get("snapshotKept")),
            already=already,
            elapsed_s=elapsed_s,
        )


class Archive:
    """`events_archive` and `archived_streams`, beside one active events collection."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        events: AsyncCollection[Document],
        counters: AsyncCollection[Document],
        writers: Writers | None = None,
        *,
        names: tuple[str, str] = (ARCHIVE, ARCHIVED_STREAMS),
        log_db: AsyncDatabase[Document] | None = None,
    ) -> None:
        """`names`: the archive collection and its registry (a log of its own, numbered by
        another sequence than the main one, has its own pair: EventStore `sequence`). Both
        only take inserts, so they live in the log database (`log_db`, default `db`:
        esmongo.store.layout); the snapshots stay in `db`."""
        log = log_db if log_db is not None else db
        self.db = db
        self.client = db.client
        self.writers = writers
        """An archive holds the counter like an append: its session is registered as a
        writer's, so that a successor can kill it if this process dies mid-archive."""
        self.active = events
        self.counters = counters
        self.events: AsyncCollection[Document] = log.get_collection(names[0], write_concern=DURABLE)
        self.registry: AsyncCollection[Document] = log.get_collection(
            names[1], write_concern=DURABLE
        )
        self.snapshots: AsyncCollection[Document] = db.get_collection(
            SNAPSHOTS, write_concern=DURABLE
        )
        self._mirror: dict[StreamId, int] = {}
        """Archived stream -> its archive number, for every archive numbered up to..."""
        self._mirrored = 0

    async def init(self, event_indexes: Sequence[IndexModel]) -> None:
        await ensure_indexes(self.events, event_indexes)
        await ensure_indexes(
            self.registry,
            [
                IndexModel([("number", ASCENDING)], name="number"),
                IndexModel([("archivedAt", ASCENDING)], name="archived_at"),
            ],
        )

    async def find(self, stream: StreamId) -> ArchiveReport | None:
        """The archive record of a stream, or None when it is not archived."""
        doc = await self.registry.find_one({"_id": registry_key(stream)})
        return ArchiveReport.of(doc, already=True) if doc else None

    async def archived(
        self, streams: Sequence[StreamId], session: AsyncClientSession | None = None
    ) -> set[StreamId]:
        """Which of these streams are archived: one `_id $in` query."""
        if not streams:
            return set()
        cursor = self.registry.find(
            {"_id": {"$in": [registry_key(s) for s in streams]}},
            projection={"aggregateType": 1, "aggregateId": 1},
            session=session,
        )
        return {StreamId(d["aggregateType"], d["aggregateId"]) async for d in cursor}

    async def mirror(
        self, archives: int, session: AsyncClientSession
    ) -> dict[StreamId, int] | None:
        """Every stream archived by archive number `archives`, with its number, or None
        when there are too many to keep in memory (ask `archived` then).

        The batch writer calls this inside its transaction with the number the counter
        gave it, so the answer is exact for that transaction; it reads `archived_streams`
        only for archives it has not seen yet (by number, indexed), and nothing at all
        in the usual case where no stream was archived since.
        """
        if archives > self._mirrored:
            if len(self._mirror) + archives - self._mirrored > MIRROR_CAPACITY:
                return None
            cursor = self.registry.find(
                {"number": {"$gt": self._mirrored, "$lte": archives}},
                projection={"aggregateType": 1, "aggregateId": 1, "number": 1},
                session=session,
            )
            async for doc in cursor:
                self._mirror[StreamId(doc["aggregateType"], doc["aggregateId"])] = doc["number"]
            self._mirrored = max(self._mirrored, archives)
        return self._mirror

    async def archive_stream(
        self, stream: StreamId, expected_version: int | None = None
    ) -> ArchiveReport:
        """Move every event of `stream` to the archive, in one transaction.

        Idempotent: a stream archived before returns its record (`already=True`). Raises
        AggregateNotFoundError when the stream has no event, ConcurrencyError when
        `expected_version` is given and the stream is at another one. Transient
        transaction errors (write conflicts with appends) are retried, like appends.
        """
        started = time.perf_counter()

        async def move(session: AsyncClientSession) -> tuple[Document, bool]:
            return await self._move(session, stream, expected_version)

        writers = self.writers
        doc, already = await run_in_transaction(
            self.client,
            move,
            session=writers.session if writers else None,
            on_conflict=writers.conflicted if writers else None,
        )
        return ArchiveReport.of(doc, already=already, elapsed_s=time.perf_counter() - started)

    async def _move(
        self, session: AsyncClientSession, stream: StreamId, expected_version: int | None
    ) -> tuple[Document, bool]:
        where = {"aggregateType": stream.aggregate_type, "aggregateId": stream.aggregate_id}
        # First, so that the transaction conflicts with every concurrent append.
        counter = await bump_counter(self.counters, ARCHIVES_FIELD, 1, session)
        before = await self.registry.find_one({"_id": registry_key(stream)}, session=session)
        if before is not None:
            await session.abort_transaction()
            return before, True
        # A migration switch closes this fence on the counter: never both at once.
        refuse_unless_writable(counter, self.active.name)
        cursor = self.active.find(where, sort=[("aggregateVersion", ASCENDING)], session=session)
        docs = [doc async for doc in cursor]
        if not docs:
            raise AggregateNotFoundError(stream)
        version = int(docs[-1]["aggregateVersion"])
        if expected_version is not None and version != expected_version:
            raise ConcurrencyError(stream, expected_version, version)
        if [d["aggregateVersion"] for d in docs] != list(range(1, version + 1)):
            raise RuntimeError(f"{stream}: its versions are not 1..{version}")
        await self.events.insert_many(docs, ordered=True, session=session)
        deleted = await self.active.delete_many(where, session=session)
        if deleted.deleted_count != len(docs):
            raise RuntimeError(
                f"{stream}: moved {len(docs)} events but deleted {deleted.deleted_count}"
            )
        kept = await self.snapshots.update_one(
            where, {"$unset": {"expiresAt": ""}}, session=session
        )
        record = {
            "_id": registry_key(stream),
            **where,
            "version": version,
            "events": len(docs),
            "firstSequence": int(docs[0]["sequence"]),
            "lastSequence": max(int(d["sequence"]) for d in docs),
            "archivedAt": utc_now(),
            "number": int(counter[ARCHIVES_FIELD]),
            "snapshotKept": kept.matched_count > 0,
        }
        await self.registry.insert_one(record, session=session)
        return record, False


Key = tuple[Any, ...]


async def merged(
    active: AsyncCollection[Document],
    archive: AsyncCollection[Document],
    query: Document,
    sort: list[tuple[str, int]],
    range_field: str,
    *,
    limit: int = 0,
    chunk: int = 1000,
    hint: list[tuple[str, int]] | None = None,
) -> AsyncIterator[Document]:
    """The documents matching `query` in both collections, in `sort` order (ascending, a
    unique key), each once; `limit` 0 means all.

    The active collection is read a chunk at a time; after each chunk, the archive is read
    over the same range of `range_field` (the first sort field the query does not fix).
    An event that moves to the archive while this runs is either read from the active
    collection before it moved, or missing there because it had moved, and then it is
    in the archive when the archive is read, which is after: nothing is skipped, and
    what shows in both is yielded once. So `read_all` stays gap-free for projections.

    In global order (`sort` is the sequence alone), the archive read of a range is left
    out when the active page holds every sequence of that range: each sequence is one
    event's `_id` in whichever collection holds it, so the archive can only have copies
    of events already read. Whatever an archive moves meanwhile, and whatever the
    filter, that holds; a live read (the events of one wake-up, all still active) then
    costs one round trip, not two.
    """
    fields = [name for name, _ in sort]

    def key(doc: Document) -> Key:
        return tuple(doc[name] for name in fields)

    yielded = 0
    last: Key | None = None
    cursor = active.find(query, sort=sort, limit=limit, batch_size=chunk, hint=hint)
    async with cursor:
        while True:
            page: list[Document] = []
            while len(page) < chunk and (doc := await anext(cursor, None)) is not None:
                page.append(doc)
            if (hook := PAUSE_POINTS.get("merged:page")) is not None:
                await hook()
            full = len(page) == chunk
            bounds = dict(query.get(range_field) or {})
            if last is not None:
                bounds["$gte"] = last[fields.index(range_field)]
            if full:
                bounds["$lte"] = page[-1][range_field]
            wanted = {**query, range_field: bounds} if bounds else query
            ids = {doc["_id"] for doc in page}
            high = key(page[-1]) if full else None
            i = 0
            skip = fields == ["sequence"] and _covers(page, bounds, last)
            ARCHIVE_READS["skipped" if skip else "read"] += 1
            if not skip:
                moved = archive.find(wanted, sort=sort, batch_size=chunk, hint=hint)
                async with moved:
                    async for doc in moved:
                        k = key(doc)
                        if last is not None and k <= last:
                            continue
                        if high is not None and k > high:
                            break  # the next chunk's
                        if doc["_id"] in ids:
                            continue
                        while i < len(page) and key(page[i]) < k:
                            yield page[i]
                            i += 1
                            yielded += 1
                            if yielded == limit:
                                return
                        yield doc
                        last = k
                        yielded += 1
                        if yielded == limit:
                            return
            for doc in page[i:]:
                yield doc
                yielded += 1
                if yielded == limit:
                    return
            if not full:
                return
            last = high


def _covers(page: list[Document], bounds: Document, last: Key | None) -> bool:
    """Whether `page` (ascending by sequence) holds every sequence the archive read over
    `bounds` would look at past `last`: then no event of that range can be archived only."""
    lows = [last[0] + 1] if last is not None else []
    lows += [bounds["$gt"] + 1] if _integer(bounds.get("$gt")) else []
    lows += [bounds["$gte"]] if _integer(bounds.get("$gte")) else []
    highs = [bounds["$lte"]] if _integer(bounds.get("$lte")) else []
    highs += [bounds["$lt"] - 1] if _integer(bounds.get("$lt")) else []
    if not lows or not highs or set(bounds) - {"$gt", "$gte", "$lt", "$lte"}:
        return False  # an open range: events past the page may exist only archived
    low, high = max(lows), min(highs)
    if high < low:
        return True
    if len(page) != high - low + 1:
        return False
    return bool(page[0]["sequence"] == low and page[-1]["sequence"] == high)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
