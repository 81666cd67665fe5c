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
from esmongo.store.collections import ACTIVE, DEFAULT_EVENTS, META


async def active_events_collection(db: AsyncDatabase[Document]) -> str:
    """The events collection the application must use (`EventStore(db, collection=...)`):
    the store's default until a migration switches."""
    doc = await db[META].find_one({"_id": ACTIVE})
    return str(doc["name"]) if doc else DEFAULT_EVENTS


async def max_sequence(collection: AsyncCollection[Document]) -> int:
    """The highest sequence in a collection of events (0 when empty), from the index."""
    doc = await collection.find_one({}, projection={"sequence": 1}, sort=[("sequence", DESCENDING)])
    return int(doc["sequence"]) if doc else 0
