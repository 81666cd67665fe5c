"""Queries over whole streams or the whole log, answered by the server (aggregations).

Separate from the everyday reads (esmongo.store.reads): these serve snapshots in bulk, time
travel and schema checks. Each covers the active collection and the archive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.store.archive import Archive

VERSION_COUNT_CHUNK = 20_000
"""Events one `$group` of `version_counts` reads at most."""


class EventQueries:
    """The aggregate queries of an EventStore (its base class)."""

    events: AsyncCollection[Document]
    counters: AsyncCollection[Document]
    sequence: str
    archive: Archive

    def _collections(self) -> tuple[AsyncCollection[Document], ...]:
        return (self.events, self.archive.events)

    async def stream_versions(
        self, aggregate_type: str, *, min_version: int = 1, archived: bool = False
    ) -> AsyncIterator[tuple[str, int]]:
        """(aggregate id, version) of each live stream of a type at `min_version` or above;
        with `archived`, archived streams too (they are closed, and their snapshot was kept
        when they were archived). A stream lives in one collection, so each comes once."""
        pipeline: list[Document] = [
            {"$match": {"aggregateType": aggregate_type}},
            {"$group": {"_id": "$aggregateId", "version": {"$max": "$aggregateVersion"}}},
            {"$match": {"version": {"$gte": min_version}}},
        ]
        for collection in self._collections() if archived else (self.events,):
            async for doc in await collection.aggregate(pipeline):
                yield str(doc["_id"]), int(doc["version"])

    async def stream_span(
        self, aggregate_type: str, aggregate_id: str, through_version: int
    ) -> tuple[int, datetime | None]:
        """How many of versions 1..`through_version` a stream holds, and the latest time
        among them: one `$group` over the (type, id, version) index range."""
        pipeline: list[Document] = [
            {
                "$match": {
                    "aggregateType": aggregate_type,
                    "aggregateId": aggregate_id,
                    "aggregateVersion": {"$lte": through_version},
                }
            },
            {"$group": {"_id": None, "last": {"$max": "$timestamp"}, "n": {"$sum": 1}}},
        ]
        for collection in self._collections():
            async for doc in await collection.aggregate(pipeline):
                return int(doc["n"]), doc["last"]
        return 0, None

    async def version_counts(self) -> dict[tuple[str, str], int]:
        """How many events are stored at each (eventType, eventVersion). Reads every event
        once (no index holds the version): for startup and `schemas check`, not requests.

        One `$group` per range of VERSION_COUNT_CHUNK sequence numbers (the sequence index
        bounds each): one `$group` over a million events held the single-threaded embedded
        server for longer than a request's timeout, while a service starting up runs this
        next to its first requests (benchmarks/bench_scale.py). The ranges end at the head
        the counter document gives, the last one left open for anything past it: asking
        the collection for its highest sequence (`find_one` sorted backward) reads every
        event on the embedded server (22 s at 1M events, docs/mongodb.md).
        """
        counter = await self.counters.find_one({"_id": self.sequence})
        head = int(counter["value"]) if counter else 0
        counts: dict[tuple[str, str], int] = {}
        for collection in self._collections():
            for after in range(0, max(head, 1), VERSION_COUNT_CHUNK):
                last = after + VERSION_COUNT_CHUNK >= head
                sequences: Document = {"$gt": after}
                if not last:
                    sequences["$lte"] = after + VERSION_COUNT_CHUNK
                pipeline: list[Document] = [
                    {"$match": {"sequence": sequences}},
                    {
                        "$group": {
                            "_id": {"t": "$eventType", "v": "$eventVersion"},
                            "n": {"$sum": 1},
                        }
                    },
                ]
                async for doc in await collection.aggregate(pipeline):
                    key = (doc["_id"]["t"], doc["_id"]["v"])
                    counts[key] = counts.get(key, 0) + int(doc["n"])
        return counts

    async def event_counts(self) -> tuple[int, int]:
        """(active, archived) event counts without counting events: the gap-free sequence
        says how many were appended, the archive registry how many of them moved (one small
        document per archived stream)."""
        pipeline: list[Document] = [{"$group": {"_id": None, "n": {"$sum": "$events"}}}]
        archived = 0
        async for doc in await self.archive.registry.aggregate(pipeline):
            archived = int(doc["n"])
        head = await self.counters.find_one({"_id": self.sequence})
        appended = int(head["value"]) if head else 0
        return appended - archived, archived

    async def stream_ids(
        self, aggregate_type: str, prefix: str = "", *, after: str = "", limit: int = 50
    ) -> list[str]:
        """Ids of the streams of a type that start with `prefix`, in id order, after `after`:
        the first event of each stream, through the (type, id, version) index."""
        ids: Document = {"$gt": after} if after else {"$gte": prefix}
        if prefix:
            ids["$lt"] = prefix + "\U0010ffff"
        query: Document = {
            "aggregateType": aggregate_type,
            "aggregateId": ids,
            "aggregateVersion": 1,
        }
        sort = [("aggregateType", ASCENDING), ("aggregateId", ASCENDING), ("aggregateVersion", 1)]
        found: set[str] = set()
        for collection in self._collections():  # a stream lives in one of them
            cursor = collection.find(query, {"aggregateId": 1}, sort=sort, limit=limit)
            found.update([str(doc["aggregateId"]) async for doc in cursor])
        return sorted(found)[:limit]
