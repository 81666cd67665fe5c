"""Which collections a check reads, and merging their cursors in one order."""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.store.collections import (
    ACTIVE,
    ARCHIVE,
    ARCHIVED_STREAMS,
    COUNTERS,
    DEFAULT_EVENTS,
    META,
    MIGRATIONS,
    own_archive,
)
from esmongo.store.layout import log_database
from esmongo.store.transactions import SEQUENCE_COUNTER

Key = tuple[Any, ...]
BATCH = 2000
PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step of a pass ("sequence:event",
"streams:event": after each event read; "opened:NAME": when a cursor on collection NAME
returned its first document), to make a race with a write deterministic."""
EVENT_FIELDS = {
    "sequence": 1,
    "eventId": 1,
    "aggregateType": 1,
    "aggregateId": 1,
    "aggregateVersion": 1,
}


@dataclass(frozen=True)
class Scope:
    """The active log, the archive, and the sealed collections that once were the log."""

    db: AsyncDatabase[Document]
    active: str
    sealed: tuple[str, ...]
    counter_id: str = SEQUENCE_COUNTER
    """The `_id` of the counter document numbering the log."""
    archive: str = ARCHIVE
    archived_streams: str = ARCHIVED_STREAMS
    own: bool = False
    """A log numbered by a sequence of its own (`log` given to `of`), outside migrations."""
    log_db: AsyncDatabase[Document] | None = None
    """The database of the events collections and the archive, when not `db`
    (esmongo.store.layout)."""

    @property
    def log(self) -> AsyncDatabase[Document]:
        return self.log_db if self.log_db is not None else self.db

    @classmethod
    async def of(cls, db: AsyncDatabase[Document], log: str | None = None) -> Scope:
        """Sealed: esmongo_meta's `previous` and `rolledBackFrom`, and rolled-back
        migration targets (an append may have committed into one as it was sealed).

        `log`: the events collection of a log numbered by a sequence of its own, named like
        it (EventStore `sequence=`, as esmongo.eventsourcing makes them); it has no sealed
        collections, migrations do not concern it."""
        log_db = await log_database(db)
        if log is not None:
            archive, registry = own_archive(log)
            return cls(db, log, (), log, archive, registry, own=True, log_db=log_db)
        meta = await db[META].find_one({"_id": ACTIVE}) or {}
        active = str(meta.get("name", DEFAULT_EVENTS))
        names = [str(n) for n in meta.get("previous", [])]
        if meta.get("rolledBackFrom"):
            names.append(str(meta["rolledBackFrom"]))
        async for run in db[MIGRATIONS].find({"status": "rolled_back"}, {"_id": 1}):
            names.append(str(run["_id"]))
        existing = set(await log_db.list_collection_names())
        sealed = tuple(n for n in dict.fromkeys(names) if n != active and n in existing)
        return cls(db, active, sealed, log_db=log_db)

    @property
    def logs(self) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]:
        """Where every event must be, once: the active collection and the archive."""
        return self.log[self.active], self.log[self.archive]

    @property
    def counters(self) -> AsyncCollection[Document]:
        return self.db[COUNTERS]

    async def counter(self) -> Document | None:
        return await self.counters.find_one({"_id": self.counter_id})

    async def highest(self, above: int, names: Sequence[str] = ()) -> int:
        """The highest sequence in the logs (and in `names`), or `above` when none is
        higher. Read upwards from a sequence known to exist or be near the top (the counter,
        or what a pass saw): a descending sort is not used because some servers walk the
        whole index for it (the embedded one: 0.5 s at 16,000 events)."""
        best = above
        for collection in [*self.logs, *(self.log[n] for n in names)]:
            tail = collection.find(
                {"sequence": {"$gt": above}}, {"sequence": 1}, sort=[("sequence", ASCENDING)]
            )
            async with tail:
                async for doc in tail:
                    best = max(best, int(doc["sequence"]))
        return best

    async def located(self, query: Document) -> list[tuple[str, Document]]:
        """The events matching `query` in the logs, with the collection each is in."""
        found = []
        for collection in self.logs:
            async for doc in collection.find(query, EVENT_FIELDS, sort=[("sequence", ASCENDING)]):
                found.append((collection.name, doc))
        return found


async def merge(
    sources: Sequence[AsyncIterator[Document]], key: Callable[[Document], Key]
) -> AsyncIterator[tuple[int, Document]]:
    """The documents of sorted sources in one order, with the index of their source.

    One document per source in memory: the merge of any number of cursors is bounded.
    """
    heap: list[tuple[Key, int, Document]] = []
    for index, source in enumerate(sources):
        doc = await anext(source, None)
        if doc is not None:
            heap.append((key(doc), index, doc))
    heapq.heapify(heap)
    while heap:
        _, index, doc = heap[0]
        following = await anext(sources[index], None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (key(following), index, following))
        yield index, doc


async def cursor(
    collection: AsyncCollection[Document],
    query: Document,
    sort: list[tuple[str, int]],
    projection: Document | None = None,
) -> AsyncGenerator[Document, None]:
    found = collection.find(query, projection, sort=sort, batch_size=BATCH)
    opened = PAUSE_POINTS.get(f"opened:{collection.name}")
    async with found:
        async for doc in found:
            if opened is not None:  # the query ran: what it reads is decided now on some servers
                await opened()
                opened = None
            yield doc
