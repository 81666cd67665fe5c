"""Which events collection is live, and how far a collection of events goes.

The active collection's name is kept in `esmongo_meta` (`{_id: "events_collection", name,
previous: [...], db}`, `db` naming the log database when it is not the main one:
esmongo.store.layout); applications build their store with `await EventStore.open(db)`.
"""

from __future__ import annotations

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.store.collections import ACTIVE, COUNTERS, DEFAULT_EVENTS, META
from esmongo.store.transactions import SEQUENCE_COUNTER

HEAD_WINDOW = 1_000
"""The first range of sequences `max_sequence` reads below the log's head; each next one is
twice as wide."""


async def active_events_collection(db: AsyncDatabase[Document]) -> str:
    """The events collection the application must use (`EventStore(db, collection=...)`):
    the store's default until a migration switches."""
    doc = await db[META].find_one({"_id": ACTIVE})
    return str(doc["name"]) if doc else DEFAULT_EVENTS


async def log_head(db: AsyncDatabase[Document]) -> int:
    """The main log's head: its sequence counter (0 before the first append)."""
    doc = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
    return int(doc["value"]) if doc else 0


async def max_sequence(collection: AsyncCollection[Document], head: int | None = None) -> int:
    """The highest sequence in a collection of events (0 when empty), from the index.

    `head`: the log's head (`log_head`), which no event of the collection passes. The
    search then steps down from it through ranges of the index, each twice as wide as the
    one before, and reads only the range that holds the answer: on the embedded server a
    backward-sorted `find_one` over the whole collection reads every event first (22 s at
    1M events, docs/mongodb.md), while an empty range costs nothing. Without `head`, that
    `find_one`.
    """
    if head is None:
        return await _highest(collection, None) or 0
    past = await _highest(collection, {"$gt": head})  # none, unless the counter is behind
    if past is not None:
        return past
    top, width = head, HEAD_WINDOW
    while top > 0:
        found = await _highest(collection, {"$gt": max(0, top - width), "$lte": top})
        if found is not None:
            return found
        top, width = top - width, width * 2
    return 0


async def _highest(collection: AsyncCollection[Document], sequences: Document | None) -> int | None:
    query: Document = {} if sequences is None else {"sequence": sequences}
    doc = await collection.find_one(
        query, projection={"sequence": 1}, sort=[("sequence", DESCENDING)]
    )
    return int(doc["sequence"]) if doc else None
