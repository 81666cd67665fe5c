"""Logs numbered by a sequence of their own, in a backup: found by their counters.

Such a log (an `EventStore(sequence=...)`: each `eventsourcing` application's `<app>_events`
and `<app>_snapshots`, a DCB application's log) has a counter document of its own in
`counters`: `{_id: <sequence>, value: <head>, writable: <events collection>}`. A backup
finds every one there, so none is left out silently, and cuts each at its own head, like
the main log: the events up to the head, exactly once each (the log has no gap).

`positions` on such a counter names collections whose documents commit in the same
transactions as the log's events: a process application's tracking records (which
notifications of other logs it has processed: `declare_positions`). They are not derived
state: restored without them, a process application would process its upstream again and
record its events twice. Every log's head and every positions collection are read in one
snapshot (a read-only transaction), so a backup holds the positions exactly as of its cut.

A log of its own has an archive of its own (esmongo.store.collections.own_archive); the
store refuses to archive such a log, so it stays empty, but one found is backed up too.
The log and its archive live in the log database (esmongo.store.layout), its counter and
its positions in the main one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern

from esmongo.codec import Document
from esmongo.ops.backup.files import (
    BATCH,
    BackupError,
    batches,
    checksum_update,
    create_indexes,
    insert,
    raw_db,
    write_metadata,
)
from esmongo.ops.check.chain import verify_chain
from esmongo.store import fence
from esmongo.store.collections import COUNTERS, own_archive
from esmongo.store.layout import log_database
from esmongo.store.transactions import SEQUENCE_COUNTER

PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step ("counted": the cut read the counters, not
yet the positions), to make a race with an append deterministic."""
POSITIONS = "positions"
"""The field of a log's counter that names its positions collections."""


async def declare_positions(db: AsyncDatabase[Document], sequence: str, collection: str) -> None:
    """Back `collection` up with the log numbered by counter `sequence`, in its cut."""
    await db[COUNTERS].update_one({"_id": sequence}, {"$addToSet": {POSITIONS: collection}})


@dataclass(frozen=True)
class OwnLog:
    """One log of its own as a backup cut it."""

    events: str
    counter: str
    head: int
    positions: tuple[str, ...] = ()

    @property
    def logs(self) -> tuple[str, str]:
        """Where its events are: the collection and its archive."""
        return (self.events, own_archive(self.events)[0])

    @property
    def collections(self) -> tuple[str, ...]:
        return (*self.logs, own_archive(self.events)[1])

    def manifest(self) -> Document:
        return {
            "events": self.events,
            "counter": self.counter,
            "head": self.head,
            POSITIONS: list(self.positions),
        }

    @classmethod
    def from_manifest(cls, entry: Document) -> OwnLog:
        return cls(
            str(entry["events"]),
            str(entry["counter"]),
            int(entry["head"]),
            tuple(entry.get(POSITIONS, [])),
        )


@dataclass
class Cut:
    """Every log of its own with its head, and its positions' documents, of one snapshot."""

    logs: list[OwnLog]
    positions: dict[str, list[RawBSONDocument]]


async def cut(db: AsyncDatabase[Document]) -> Cut:
    """Read every own log's counter and its positions collections in one snapshot."""
    found = Cut([], {})

    async def read(session: AsyncClientSession) -> None:
        found.logs.clear()
        found.positions.clear()
        query = {"_id": {"$ne": SEQUENCE_COUNTER}, fence.WRITABLE: {"$type": "string"}}
        async for counter in db[COUNTERS].find(query, session=session):
            found.logs.append(
                OwnLog(
                    str(counter[fence.WRITABLE]),
                    str(counter["_id"]),
                    int(counter.get("value", 0)),
                    tuple(str(name) for name in counter.get(POSITIONS, [])),
                )
            )
        if (hook := PAUSE_POINTS.get("counted")) is not None:
            await hook()
        for name in {name for log in found.logs for name in log.positions}:
            found.positions[name] = [
                doc async for doc in raw_db(db)[name].find({}, session=session)
            ]

    async with db.client.start_session() as session:
        await session.with_transaction(read, read_concern=ReadConcern("snapshot"))
    return found


async def dump(
    log_db: AsyncDatabase[Document],
    log: OwnLog,
    target: Path,
    progress: Callable[[str, int], None] | None,
) -> tuple[dict[str, int], str]:
    """Write the log's collections (in the log database, esmongo.store.layout) up to its
    head; their counts and the events' checksum."""
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    existing = set(await log_db.list_collection_names())
    for name in log.collections:
        if name not in existing:
            continue
        is_log = name in log.logs
        query: Document = {"sequence": {"$lte": log.head}} if is_log else {}
        count = 0
        with open(target / f"{name}.bson", "wb") as out:  # noqa: ASYNC230 - sequential dump
            async for doc in raw_db(log_db)[name].find(
                query, sort=[("sequence", 1)] if is_log else None, batch_size=BATCH
            ):
                out.write(doc.raw)
                if is_log:
                    checksum_update(digest, doc)
                count += 1
                if progress is not None and count % BATCH == 0:
                    progress(name, count)
        await write_metadata(log_db, name, target)
        counts[name] = count
    return counts, digest.hexdigest()


def dump_positions(name: str, docs: Iterable[RawBSONDocument], target: Path) -> int:
    count = 0
    with open(target / f"{name}.bson", "wb") as out:
        for doc in docs:
            out.write(doc.raw)
            count += 1
    return count


async def reset_counter(db: AsyncDatabase[Document], log: OwnLog) -> None:
    """The restored log's counter: its head, its collection, its positions; `restores`
    moves its generation (a process that remembers the replaced log checks again)."""
    await db[COUNTERS].update_one(
        {"_id": log.counter},
        {
            "$set": {
                "value": log.head,
                fence.WRITABLE: log.events,
                POSITIONS: list(log.positions),
            },
            "$inc": {fence.RESTORES: 1},
            "$setOnInsert": fence.incarnation(),
        },
        upsert=True,
    )


async def load(
    db: AsyncDatabase[Document],
    source: Path,
    log: OwnLog,
    checksum: str,
    progress: Callable[[str, int], None] | None,
) -> dict[str, int]:
    """Restore one log of its own and its positions: every sequence up to its head exactly
    once, the checksum the backup recorded, its counter, and its chain verified."""
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    seen = bytearray(log.head + 1)
    log_db = await log_database(db)
    for name in (*log.collections, *log.positions):
        data = source / f"{name}.bson"
        if not data.exists():
            continue
        home = log_db if name in log.collections else db
        await create_indexes(home, name, source)
        raw = raw_db(home)
        is_log = name in log.logs
        count = 0
        files = batches(data)
        while (batch := await asyncio.to_thread(next, files, None)) is not None:
            if is_log:
                for doc in batch:
                    checksum_update(digest, doc)
                    sequence = int(doc["sequence"])
                    if not 0 < sequence <= log.head or seen[sequence]:
                        raise BackupError(
                            f"{log.events}: sequence {sequence} is in the backup twice or "
                            f"past its head {log.head}"
                        )
                    seen[sequence] = 1
            count += await insert(raw, name, batch, log=is_log)
            if progress is not None:
                progress(name, count)
        counts[name] = count
    held = sum(counts.get(name, 0) for name in log.logs)
    if held != log.head:
        raise BackupError(
            f"{log.events}: restored {held} events up to its head {log.head}: incomplete"
        )
    if digest.hexdigest() != checksum:
        raise BackupError(f"{log.events}: the restored events do not match the checksum")
    await reset_counter(db, log)
    chain = await verify_chain(db, log=log.events)
    if not chain.ok:
        first = chain.breaks[0]
        raise BackupError(
            f"{log.events}: the restored chain is broken at #{first.sequence} "
            f"({first.problem}): the backup was altered after it was made"
        )
    return counts
