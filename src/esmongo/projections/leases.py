"""Leases in `projection_leases`: one active runner per projection across processes.

A lease is a document with an owner, an expiry computed on the server's clock (`$$NOW`
in an update pipeline, so hosts with skewed clocks agree) and a version that grows with
every acquisition. The version is the fencing token: the new holder writes it into the
checkpoint, and a checkpoint write carrying an older one fails. A holder that stalls past
its expiry can therefore lose the lease but never move the checkpoint afterwards.

Dates are compared as milliseconds (`$toLong`): valid on MongoDB, and it avoids a date
comparison bug of the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.store.sessions import kill_sessions

COLLECTION = "projection_leases"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseState:
    """A lease as stored."""

    name: str
    owner: str | None
    version: int
    expires_at: datetime | None
    acquired_at: datetime | None
    heartbeat_at: datetime | None

    @classmethod
    def from_document(cls, doc: Document) -> LeaseState:
        return cls(
            name=doc["_id"],
            owner=doc.get("owner"),
            version=int(doc.get("version", 0)),
            expires_at=doc.get("expiresAt"),
            acquired_at=doc.get("acquiredAt"),
            heartbeat_at=doc.get("heartbeatAt"),
        )


def _ms(expression: Any) -> Document:
    return {"$toLong": expression}


class Leases:
    """Acquire, renew and release projection leases."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection: AsyncCollection[Document] = db.get_collection(
            COLLECTION, codec_options=CODEC_OPTIONS
        )

    async def acquire(
        self,
        name: str,
        owner: str,
        ttl_s: float,
        *,
        min_version: int = 0,
        force: bool = False,
        session_id: Any = None,
    ) -> int | None:
        """Take the lease when it is free, expired or already `owner`'s; its new version.

        `force` takes it from a live holder (rebuilds and resets do, to stop the runner
        before they touch its read model). Returns None when another owner holds it.
        """
        ttl_ms = max(1, round(ttl_s * 1000))
        free = {
            "$or": [
                {"$eq": [{"$ifNull": ["$owner", None]}, None]},
                {"$eq": ["$owner", owner]},
                {"$lte": [_ms({"$ifNull": ["$expiresAt", "$$NOW"]}), _ms("$$NOW")]},
            ]
        }
        take: Any = True if force else "$_take"
        pipeline: list[Document] = [
            {"$set": {"_take": free}},
            {
                "$set": {
                    "version": {
                        "$cond": [
                            take,
                            {
                                "$max": [
                                    {"$add": [{"$ifNull": ["$version", 0]}, 1]},
                                    min_version + 1,
                                ]
                            },
                            "$version",
                        ]
                    },
                    "owner": {"$cond": [take, owner, "$owner"]},
                    "expiresAt": {"$cond": [take, {"$add": ["$$NOW", ttl_ms]}, "$expiresAt"]},
                    "acquiredAt": {"$cond": [take, "$$NOW", "$acquiredAt"]},
                    "heartbeatAt": {"$cond": [take, "$$NOW", "$heartbeatAt"]},
                    "session": {"$cond": [take, {"$literal": session_id}, "$session"]},
                }
            },
            {"$unset": "_take"},
        ]
        before = await self.collection.find_one({"_id": name})
        doc = await self.collection.find_one_and_update(
            {"_id": name}, pipeline, upsert=True, return_document=ReturnDocument.AFTER
        )
        if doc is None or doc.get("owner") != owner:
            return None
        if before and before.get("session") and before.get("session") != session_id:
            await self._kill_session(name, before["session"])
        return int(doc["version"])

    async def _kill_session(self, name: str, session_id: Any) -> None:
        """Abort the previous holder's transaction, if one is still open on the server.

        A process killed in the middle of a batch leaves its transaction open until the
        server's transaction lifetime limit (60 s on MongoDB), and the new holder's batches
        would meet write conflicts on the checkpoint until then (esmongo.store.sessions).
        """
        client = self.collection.database.client
        await kill_sessions(client, [session_id], f"the previous holder of lease {name}")

    async def renew(self, name: str, owner: str, version: int, ttl_s: float) -> bool:
        """Push the expiry out; False when the lease is no longer this holder's."""
        ttl_ms = max(1, round(ttl_s * 1000))
        result = await self.collection.update_one(
            {"_id": name, "owner": owner, "version": version},
            [{"$set": {"expiresAt": {"$add": ["$$NOW", ttl_ms]}, "heartbeatAt": "$$NOW"}}],
        )
        return result.matched_count == 1

    async def release(self, name: str, owner: str, version: int) -> None:
        """Give the lease up now, so that a standby takes over without waiting for expiry."""
        await self.collection.update_one(
            {"_id": name, "owner": owner, "version": version},
            [{"$set": {"owner": None, "expiresAt": "$$NOW", "releasedAt": "$$NOW"}}],
        )

    async def get(self, name: str) -> LeaseState | None:
        doc = await self.collection.find_one({"_id": name})
        return LeaseState.from_document(doc) if doc else None


class HeldLease:
    """A lease this process holds, kept alive by a heartbeat task.

    `valid` turns false as soon as a renewal is refused, or when no renewal succeeded for
    a whole TTL (measured locally from the time the last successful renewal was sent, so
    it errs on the early side). The fence in the checkpoint is what guarantees safety;
    this only lets a runner notice early.
    """

    def __init__(self, leases: Leases, name: str, owner: str, version: int, ttl_s: float) -> None:
        self.leases = leases
        self.name = name
        self.owner = owner
        self.version = version
        self.ttl_s = ttl_s
        self.lost = asyncio.Event()
        self.on_lost: Callable[[], None] | None = None
        """Called once when the lease is found lost (runners use it to wake up)."""
        self._renewed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def valid(self) -> bool:
        if self.lost.is_set():
            return False
        if time.monotonic() - self._renewed_at >= self.ttl_s:
            self._lose()
            return False
        return True

    def _lose(self) -> None:
        if not self.lost.is_set():
            self.lost.set()
            if self.on_lost is not None:
                self.on_lost()

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name=f"lease:{self.name}")

    async def _heartbeat(self) -> None:
        interval = self.ttl_s / 3
        while not self.lost.is_set():
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                renewed = await self.leases.renew(self.name, self.owner, self.version, self.ttl_s)
            except PyMongoError as exc:
                log.warning("lease %s: heartbeat failed: %s", self.name, exc)
                if not self.valid:
                    log.warning("lease %s: expired without a heartbeat", self.name)
                continue
            if renewed:
                self._renewed_at = sent
            else:
                log.warning("lease %s: taken over by another runner", self.name)
                self._lose()

    async def stop(self, *, release: bool) -> None:
        """Stop the heartbeat; with `release`, free the lease for a standby at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if release and not self.lost.is_set():
            try:
                await self.leases.release(self.name, self.owner, self.version)
            except PyMongoError as exc:  # it will expire anyway
                log.warning("lease %s: release failed: %s", self.name, exc)
        self.lost.set()
