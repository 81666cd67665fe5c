"""Snapshots: one cached state per aggregate, so loading does not replay every event.

A snapshot is a cache, never the truth: it expires (TTL on `expiresAt`), is ignored when
its `schemaVersion` is not the aggregate class's, and is only ever replaced by a newer one
of the same schema version or by one of a higher schema version: never by an older one.

The latest snapshot serves loads; a state in the past (esmongo.model.temporal) needs one at
or before it. So the first snapshot saved in each band of `history_every` versions is also
kept in `snapshot_history` (never replaced): the state at any version replays at most about
`history_every` events, however long the stream.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.metrics import SNAPSHOT_DURATION
from esmongo.store.collections import SNAPSHOT_HISTORY, SNAPSHOTS

DEFAULT_RETENTION = timedelta(days=30)
HISTORY_EVERY = 1000
"""Versions per band of the snapshot history."""


@dataclass(frozen=True)
class Snapshot:
    aggregate_type: str
    aggregate_id: str
    version: int
    state: Mapping[str, Any]
    schema_version: int
    created_at: datetime
    expires_at: datetime | None


def crosses_interval(old_version: int, new_version: int, every: int) -> bool:
    """True when going from old to new passes a multiple of `every` (a batch may jump one)."""
    return every > 0 and new_version // every > old_version // every


class SnapshotStore:
    """The `snapshots` collection."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        retention: timedelta | None = DEFAULT_RETENTION,
        created_by: str = "snapshot_service",
        history_every: int = HISTORY_EVERY,
    ) -> None:
        self.collection: AsyncCollection[Document] = db.get_collection(SNAPSHOTS)
        self.history: AsyncCollection[Document] = db.get_collection(SNAPSHOT_HISTORY)
        self.retention = retention
        self.created_by = created_by
        self.history_every = history_every

    async def init(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel(
                    [("aggregateType", ASCENDING), ("aggregateId", ASCENDING)],
                    unique=True,
                    name="aggregate_unique",
                ),
                IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="ttl"),
            ]
        )
        await self.history.create_indexes(
            [
                IndexModel(
                    [
                        ("aggregateType", ASCENDING),
                        ("aggregateId", ASCENDING),
                        ("version", ASCENDING),
                    ],
                    name="aggregate_version",
                ),
                IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="ttl"),
            ]
        )

    async def get(self, aggregate_type: str, aggregate_id: str) -> Snapshot | None:
        doc = await self.collection.find_one(
            {"aggregateType": aggregate_type, "aggregateId": aggregate_id}
        )
        return _snapshot(doc) if doc is not None else None

    async def at_or_before(
        self, aggregate_type: str, aggregate_id: str, version: int, schema_version: int, limit: int
    ) -> list[Snapshot]:
        """Kept snapshots of this schema at `version` or before, newest first (at most
        `limit`): one range of the history's index."""
        found = self.history.find(
            {
                "aggregateType": aggregate_type,
                "aggregateId": aggregate_id,
                "version": {"$lte": version},
            },
            sort=[("version", -1)],
            limit=limit,
        )
        return [
            snapshot
            async for doc in found
            if (snapshot := _snapshot(doc)).schema_version == schema_version
        ]

    async def save(
        self,
        aggregate_type: str,
        aggregate_id: str,
        version: int,
        state: Mapping[str, Any],
        schema_version: int,
    ) -> bool:
        """Store the snapshot unless a newer one (or one of a newer schema) is there; True when
        written."""
        started = time.perf_counter()
        now = utc_now()
        fields = {
            "version": version,
            "state": dict(state),
            "schemaVersion": schema_version,
            "eventCount": version,
            "createdAt": now,
            "createdBy": self.created_by,
            "expiresAt": now + self.retention if self.retention else None,
        }
        key = {"aggregateType": aggregate_type, "aggregateId": aggregate_id}
        # Both writes are conditional in the database: a process reading first and writing
        # after could replace what another process wrote in between.
        try:
            result = await self.collection.update_one(
                key | {"schemaVersion": schema_version, "version": {"$lt": version}},
                {"$set": fields},
                upsert=True,
            )
        except DuplicateKeyError:
            # One is there of another schema, or of this one at this version or newer. Only
            # an older schema's is replaced: loads ignore it, so it would block snapshots
            # until the aggregate outgrew it (snapshot_all right after a schema bump would do
            # nothing). A newer schema's stays: a process still on the old code must not
            # overwrite what the new code wrote (missing schemaVersion reads as 0).
            result = await self.collection.update_one(
                key | {"schemaVersion": {"$not": {"$gte": schema_version}}}, {"$set": fields}
            )
            if result.modified_count == 0:
                return False
        if self.history_every > 0 and version >= self.history_every:
            band = version // self.history_every
            await self.history.update_one(
                {"_id": {"type": aggregate_type, "id": aggregate_id, "band": band}},
                {"$setOnInsert": key | fields},
                upsert=True,
            )
        SNAPSHOT_DURATION.labels(aggregate_type).observe(time.perf_counter() - started)
        return result.upserted_id is not None or result.modified_count > 0

    async def delete(self, aggregate_type: str, aggregate_id: str) -> None:
        key = {"aggregateType": aggregate_type, "aggregateId": aggregate_id}
        await self.collection.delete_one(key)
        await self.history.delete_many(key)


def _snapshot(doc: Mapping[str, Any]) -> Snapshot:
    return Snapshot(
        aggregate_type=doc["aggregateType"],
        aggregate_id=doc["aggregateId"],
        version=doc["version"],
        state=doc["state"],
        schema_version=doc.get("schemaVersion", 0),
        created_at=doc["createdAt"],
        expires_at=doc.get("expiresAt"),
    )
