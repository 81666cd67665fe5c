"""Copying the events into a new collection, transformed by the plan; resumable.

The copy is chained anew (esmongo.store.chain.relink): each event links to the one before
it in the target, or in the archive when that one was archived before the run; an event
whose hash changed records the original's in `sourceHash`, which is how the new chain
links to the original one (kept, sealed, beside it).

A failing event stops the writing (the target stays a gap-free prefix of the source, so a
resume after fixing the transform continues from there) but the scan goes on so that every
failure is listed, in the report and in `esmongo_migration_failures`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.migration.active import active_events_collection, max_sequence
from esmongo.ops.migration.errors import MigrationError
from esmongo.ops.migration.plan import EventRef, Failure, MigrationPlan, Progress, describe
from esmongo.store.chain import HASH, relink
from esmongo.store.collections import ARCHIVE, ARCHIVED_STREAMS, CHAIN_LINKS, COUNTERS, MIGRATIONS
from esmongo.store.event_store import EVENT_INDEXES
from esmongo.store.layout import log_database
from esmongo.store.transactions import DURABLE, SEQUENCE_COUNTER

FAILURES = "esmongo_migration_failures"
ARCHIVE_CLOCK_MARGIN = timedelta(hours=1)
"""Archives recorded this long before a run started are still checked (clocks differ)."""


@dataclass
class RunReport:
    source: str
    target: str
    resumed_after: int
    """The target's highest sequence when this run started (0: a fresh start)."""
    scanned: int
    copied: int
    transformed: int
    last_sequence: int
    """The target's highest sequence when this run ended."""
    failures: list[Failure]
    failure_count: int
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return self.failure_count == 0

    @property
    def rate(self) -> float:
        """Documents copied per second."""
        return self.copied / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def copy_events(
    db: AsyncDatabase[Document],
    plan: MigrationPlan,
    source_name: str,
    target: str,
    *,
    batch_size: int,
    max_listed: int,
    progress: Progress | None = None,
) -> RunReport:
    """Copy every source event after the target's highest sequence into `target`,
    transformed where a migration applies; `progress(done, total)` after each batch."""
    started = time.perf_counter()
    log = await log_database(db)
    source = log[source_name]
    sink = log.get_collection(target, write_concern=DURABLE)
    checkpoint = await _claim(db, plan, source_name, target)
    await sink.create_indexes(EVENT_INDEXES)
    resumed_after = await _resume_point(sink, checkpoint)
    query = {"sequence": {"$gt": resumed_after}}
    total = await _remaining(db, source, sink, resumed_after)
    now = utc_now()
    report = RunReport(source_name, target, resumed_after, 0, 0, 0, resumed_after, [], 0, 0.0)
    links = _Links(log, sink, resumed_after)
    batch: list[Document] = []
    failed: list[Document] = []
    failures = db[FAILURES]
    await failures.delete_many({"target": target})  # a resume meets them all again
    cursor = source.find(query, sort=[("sequence", ASCENDING)], batch_size=batch_size)
    async with cursor:
        async for doc in cursor:
            report.scanned += 1
            try:
                out, changed = plan.transform(doc, now)
            except Exception as exc:
                failure = Failure(EventRef.of(doc), describe(exc))
                report.failure_count += 1
                if len(report.failures) < max_listed:
                    report.failures.append(failure)
                failed.append(failure.to_document(target))
                if len(failed) >= batch_size:
                    await failures.insert_many(failed)
                    failed.clear()
            else:
                # After a failure nothing more is written, so the target stays a
                # gap-free prefix of the source; the scan goes on to list every failure.
                if not report.failure_count:
                    await links.relink(out)
                    batch.append(out)
                    report.transformed += changed
                    if len(batch) >= batch_size:
                        await _flush(db, sink, batch, report)
            if progress is not None and report.scanned % batch_size == 0:
                progress(report.scanned, total)
    await _flush(db, sink, batch, report)
    await _drop_archived(db, sink)
    if failed:
        await failures.insert_many(failed)
    if progress is not None:
        progress(report.scanned, total)
    report.elapsed_s = time.perf_counter() - started
    await db[MIGRATIONS].update_one(
        {"_id": target},
        {
            "$set": {
                "status": "failed" if report.failure_count else "copied",
                "lastSequence": report.last_sequence,
                "failureCount": report.failure_count,
                "updatedAt": utc_now(),
            },
            "$inc": {"copied": report.copied, "transformed": report.transformed},
        },
    )
    return report


async def _flush(
    db: AsyncDatabase[Document],
    sink: AsyncCollection[Document],
    batch: list[Document],
    report: RunReport,
) -> None:
    if not batch:
        return
    await sink.insert_many(batch, ordered=True)
    report.copied += len(batch)
    report.last_sequence = int(batch[-1]["sequence"])
    batch.clear()
    await db[MIGRATIONS].update_one(
        {"_id": report.target}, {"$set": {"lastSequence": report.last_sequence}}
    )


class _Links:
    """The target's chain as the copy extends it (esmongo.store.chain)."""

    def __init__(
        self, log: AsyncDatabase[Document], sink: AsyncCollection[Document], after: int
    ) -> None:
        self.logs = [sink, log[ARCHIVE]]
        self.sequence = after
        self.previous: str | None = None if after else ""

    async def relink(self, doc: Document) -> None:
        sequence = int(doc["sequence"])
        if self.previous is None or sequence != self.sequence + 1:
            self.previous = await self._hash_of(sequence - 1)
        self.previous = relink(self.previous, doc)
        self.sequence = sequence

    async def _hash_of(self, sequence: int) -> str:
        """The hash of the event before: in the target, or archived before the run."""
        for log in self.logs:
            doc = await log.find_one({"_id": sequence}, {HASH: 1})
            if doc is not None:
                return str(doc.get(HASH, ""))
        return ""


async def _drop_archived(db: AsyncDatabase[Document], sink: AsyncCollection[Document]) -> None:
    """Take out of the target the streams archived since this run started: they moved
    to the archive after being copied. Archived events are not migrated (upcasters
    still apply when they are read), and a stream lives in one collection only.

    The target's next events link to the dropped copies: their hashes are kept in
    `esmongo_chain_links`, so that `esmongo verify` accepts those links."""
    run = await db[MIGRATIONS].find_one({"_id": sink.name})
    if run is None:
        return
    since = run["startedAt"] - ARCHIVE_CLOCK_MARGIN
    log = await log_database(db)
    async for record in log[ARCHIVED_STREAMS].find({"archivedAt": {"$gte": since}}):
        where = {"aggregateType": record["aggregateType"], "aggregateId": record["aggregateId"]}
        dropped = [
            {"_id": f"{sink.name}:{doc['sequence']}", "sequence": doc["sequence"], HASH: doc[HASH]}
            async for doc in sink.find(where, {"sequence": 1, HASH: 1})
            if HASH in doc
        ]
        for link in dropped:
            await log[CHAIN_LINKS].replace_one({"_id": link["_id"]}, link, upsert=True)
        await sink.delete_many(where)


async def _claim(db: AsyncDatabase[Document], plan: MigrationPlan, source: str, target: str) -> int:
    """Record this run, or check that a resumed one copies the same way. Returns the
    last sequence the run recorded as copied (0 for a new run)."""
    if target == source:
        raise MigrationError("the target must be a new collection, not the source")
    if target == await active_events_collection(db):
        raise MigrationError(f"{target} is the active events collection")
    runs = db[MIGRATIONS]
    run = await runs.find_one({"_id": target})
    if run is None:
        if await (await log_database(db))[target].find_one({}, projection={"_id": 1}) is not None:
            raise MigrationError(
                f"{target} already holds documents that no migration wrote: choose a new name"
            )
        now = utc_now()
        await runs.insert_one(
            {
                "_id": target,
                "source": source,
                "migrationIds": plan.ids,
                "status": "running",
                "startedAt": now,
                "updatedAt": now,
                "copied": 0,
                "transformed": 0,
                "lastSequence": 0,
            }
        )
        return 0
    if run["source"] != source or list(run["migrationIds"]) != plan.ids:
        raise MigrationError(
            f"{target} is being written by another migration (from {run['source']} with "
            f"{run['migrationIds']}): resume it with the same source and migrations"
        )
    if run["status"] in ("switched", "rolled_back"):
        raise MigrationError(
            f"{target} was already switched to ({run['status']}): migrate into a new collection"
        )
    await runs.update_one(
        {"_id": target},
        {
            "$set": {"status": "running", "updatedAt": utc_now()},
            "$push": {"resumedAt": utc_now()},
        },
    )
    return int(run.get("lastSequence") or 0)


async def _resume_point(sink: AsyncCollection[Document], checkpoint: int) -> int:
    """The target's highest sequence. The target is a gap-free prefix of the source and the
    run records its last flushed batch, so only what a crash left after that is read (an
    index range; a descending sort over the whole index is a scan on some servers)."""
    if checkpoint and await sink.find_one({"sequence": checkpoint}, projection={"_id": 1}) is None:
        return await max_sequence(sink, checkpoint)  # lost its tail: trust what it holds
    last = checkpoint
    cursor = sink.find(
        {"sequence": {"$gt": checkpoint}}, projection={"sequence": 1}, sort=[("sequence", 1)]
    )
    async with cursor:
        async for doc in cursor:
            last = int(doc["sequence"])
    return last


async def _remaining(
    db: AsyncDatabase[Document],
    source: AsyncCollection[Document],
    sink: AsyncCollection[Document],
    after: int,
) -> int:
    """How many events are left to copy, for progress only. The store's sequence counter
    is the head of the gap-free active collection (one read); counts are the fallback."""
    counter = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
    if counter is not None and source.name == await active_events_collection(db):
        return max(int(counter["value"]) - after, 0)
    return max(await source.count_documents({}) - await sink.count_documents({}), 0)
