"""Writers register their sessions, so that a dead writer's open transaction can be killed.

Every append transaction writes the sequence counter first. A process that dies inside one
leaves the counter locked until the server's transaction lifetime ends
(`transactionLifetimeLimitSeconds`, 60 s by default on MongoDB), and every append of every
other process meets a write conflict until then. So each process that writes events keeps
a registration in `esmongo_writers`: the ids of the sessions its transactions use (sent
once per pooled session, before its first transaction) and a heartbeat, renewed in the
background while it writes. A writer that keeps meeting conflicts for `conflict_after_s`,
and every store at `init()`, looks for registrations whose heartbeat is older than
`stale_after_s` on the server's clock, kills their sessions (esmongo.store.sessions) and
removes them. A writer idle for `idle_after_s` withdraws its registration and stops
its heartbeat; its next transaction registers again.

Killing a live but stalled writer's sessions is safe: its transaction aborts, nothing of it
was acknowledged, and the append is retried or fails to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import InvalidOperation, PyMongoError

from esmongo.codec import Document
from esmongo.store.collections import WRITERS
from esmongo.store.sessions import kill_sessions
from esmongo.store.transactions import DURABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Liveness:
    """How writers tell the living from the dead (seconds)."""

    heartbeat_s: float = 1.0
    """How often a writing process renews its heartbeat."""
    stale_after_s: float = 5.0
    """A heartbeat older than this, on the server's clock, is a dead writer's."""
    conflict_after_s: float = 1.0
    """How long write conflicts go on before looking for dead writers (and between looks)."""
    idle_after_s: float = 30.0
    """A writer with no transaction for this long withdraws its registration."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "stale_after_s", "conflict_after_s", "idle_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Liveness.{name} must be > 0, not {getattr(self, name)!r}")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError(
                f"Liveness.stale_after_s ({self.stale_after_s}) must exceed two heartbeats "
                f"({2 * self.heartbeat_s}), or live writers would be taken for dead"
            )


class Writers:
    """This process's registration as a writer, and the sweep of dead writers' sessions."""

    def __init__(self, db: AsyncDatabase[Document], liveness: Liveness | None = None) -> None:
        self.client = db.client
        self.collection: AsyncCollection[Document] = db.get_collection(
            WRITERS, write_concern=DURABLE
        )
        self.liveness = liveness or Liveness()
        self.killed = 0
        """Sessions of dead writers this process killed (diagnostics, tests)."""
        self._id: str | None = None
        self._known: set[bytes] = set()  # registered session ids, as raw bytes
        self._busy = 0
        self._last_used = time.monotonic()
        self._conflict_since: float | None = None
        self._swept_at = float("-inf")
        self._heartbeat: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncClientSession]:
        """A session for one transaction, registered before it writes anything.

        Leaving without an exception means the transaction committed: the conflicts, if
        there were any, are over.
        """
        async with self.client.start_session() as session:
            await self.enlist(session)
            self._busy += 1
            try:
                yield session
            finally:
                self._busy -= 1
                self._last_used = time.monotonic()
            self._conflict_since = None

    async def enlist(self, session: AsyncClientSession) -> None:
        """Register the session's id when it is new to this process (pooled sessions are
        reused, so this costs a round trip only the first time), and keep the heartbeat
        going."""
        self._last_used = time.monotonic()
        session_id = session.session_id
        key = _key(session_id)
        if self._id is None:
            self._id = uuid.uuid4().hex
            self._known = set()
        if key not in self._known:
            await self.collection.update_one(
                {"_id": self._id},
                {
                    "$addToSet": {"sessions": session_id},
                    "$currentDate": {"heartbeatAt": True},
                    "$setOnInsert": {"host": socket.gethostname(), "pid": os.getpid()},
                },
                upsert=True,
            )
            self._known.add(key)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name=f"writer:{self._id}")

    async def conflicted(self) -> None:
        """A transaction met a write conflict: after `conflict_after_s` of them, sweep."""
        now = time.monotonic()
        if self._conflict_since is None:
            self._conflict_since = now
            return
        wait = self.liveness.conflict_after_s
        if now - self._conflict_since < wait or now - self._swept_at < wait:
            return
        self._swept_at = now
        try:
            await self.sweep()
        except PyMongoError as exc:  # the conflict is retried anyway
            log.warning("could not look for dead writers: %s", exc)

    async def sweep(self) -> int:
        """Kill the sessions of writers whose heartbeat is stale, then forget them; how many
        writers were swept."""
        stale_ms = round(self.liveness.stale_after_s * 1000)
        query: Document = {
            "$expr": {
                "$lt": [
                    {"$toLong": "$heartbeatAt"},
                    {"$subtract": [{"$toLong": "$$NOW"}, stale_ms]},
                ]
            }
        }
        swept = 0
        async for doc in self.collection.find(query):
            if doc["_id"] == self._id:
                continue  # our own heartbeat is late: we are not dead
            sessions = list(doc.get("sessions") or [])
            whose = f"writer {doc['_id']} (pid {doc.get('pid')} on {doc.get('host')})"
            if not await kill_sessions(self.client, sessions, whose):
                continue
            log.warning("killed %d sessions of %s, dead since its heartbeat", len(sessions), whose)
            self.killed += len(sessions)
            # Only as seen: a writer that beat meanwhile keeps its registration.
            await self.collection.delete_one({"_id": doc["_id"], "heartbeatAt": doc["heartbeatAt"]})
            swept += 1
        return swept

    async def close(self) -> None:
        """Stop the heartbeat and withdraw the registration (a clean shutdown)."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._withdraw()

    async def _withdraw(self) -> None:
        registration, self._id = self._id, None
        self._known = set()
        if registration is not None:
            with contextlib.suppress(PyMongoError):
                await self.collection.delete_one({"_id": registration})

    async def _beat(self) -> None:
        while self._id is not None:
            await asyncio.sleep(self.liveness.heartbeat_s)
            idle = time.monotonic() - self._last_used
            if self._busy == 0 and idle >= self.liveness.idle_after_s:
                self._heartbeat = None
                await self._withdraw()  # the next transaction registers under a new id
                return
            registration = self._id
            try:
                result = await self.collection.update_one(
                    {"_id": registration}, {"$currentDate": {"heartbeatAt": True}}
                )
            except InvalidOperation:
                return  # the client was closed: this process writes no more
            except PyMongoError as exc:
                log.warning("writer heartbeat failed: %s", exc)
                continue
            if result.matched_count == 0 and registration == self._id:
                # Swept: another writer took us for dead and killed our sessions.
                log.warning("writer %s was taken for dead: registering again", registration)
                self._known = set()


def _key(session_id: Mapping[str, Any]) -> bytes:
    return bytes(session_id["id"])
