"""Queries over whole streams or the whole log, answered by the server (aggregations).

Separate from the everyday reads (esmongo.store.reads): these serve snapshots in bulk, time
travel and schema checks. Each covers the active collection and the archive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.store.archive import Archive


class EventQueries:
    """The aggregate queries of an EventStore (its base class)."""

    events: AsyncCollection[Document]
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
        once (no index holds the version): for startup and `schemas check`, not requests."""
        pipeline: list[Document] = [
            {"$group": {"_id": {"t": "$eventType", "v": "$eventVersion"}, "n": {"$sum": 1}}}
        ]
        counts: dict[tuple[str, str], int] = {}
        for collection in self._collections():
            async for doc in await collection.aggregate(pipeline):
                key = (doc["_id"]["t"], doc["_id"]["v"])
                counts[key] = counts.get(key, 0) + int(doc["n"])
        return counts

    async def first_sequences_at(self, moments: Sequence[datetime]) -> list[int | None]:
        """For each moment, the sequence of the first active event stamped at or after it
        (None: none yet). One point lookup on the timestamp index each, whatever the store
        holds: differences between neighbours count the appends in between, which is how
        the console draws events per second. Timestamps follow the commit order closely,
        not exactly (concurrent writers), so the counts are estimates."""
        found: list[int | None] = []
        for moment in moments:
            doc = await self.events.find_one(
                {"timestamp": {"$gte": moment}},
                {"sequence": 1},
                sort=[("timestamp", ASCENDING)],
            )
            found.append(int(doc["sequence"]) if doc else None)
        return found

    async def aggregate_types(self) -> list[str]:
        """The aggregate types that have events (active and archived), sorted."""
        types: set[str] = set()
        for collection in self._collections():
            types.update(str(t) for t in await collection.distinct("aggregateType"))
        return sorted(types)

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
