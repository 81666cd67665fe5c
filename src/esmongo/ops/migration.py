"""Stored migrations that never lose an original event (see docs/adr/0004).

Upcasters are the first answer to a new event version: nothing is rewritten. When old
versions must go from storage too, a migration copies every event, in sequence order,
into a NEW events collection, transforming the ones it targets; it verifies the copy
against the source and only then switches the application over. The source stays,
sealed read-only, for audit and rollback (see `esmongo.ops.switchover`).

- `Migrator.dry_run()` transforms without writing: counts, sample diffs, failures.
- `Migrator.run(target)` copies in batches; after an interruption it resumes after the
  target's highest sequence. A failing event stops the writing (the target stays a gap-free
  prefix of the source, so a resume after fixing the transform continues from there) but
  the scan goes on so that every failure is listed.
- `Migrator.verify(target)` compares both collections in one merge pass.
- `Migrator.switch(target)` seals the source, catches up, verifies, and records the new
  active collection in `esmongo_meta`; `rollback_switch(db)` goes back while that is lossless.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.switchover import (
    FAILURES,
    MAX_LISTED,
    MigrationError,
    Progress,
    VerifyReport,
    active_events_collection,
    max_sequence,
    pause_point,
    record_switch,
    seal,
    switch_reason,
    unseal,
    verify_copy,
)
from esmongo.schema.registry import SchemaRegistry, version_chain
from esmongo.store import fence
from esmongo.store.collections import ARCHIVED_STREAMS, MIGRATIONS
from esmongo.store.event_store import EVENT_INDEXES
from esmongo.store.transactions import DURABLE, SEQUENCE_COUNTER

ARCHIVE_CLOCK_MARGIN = timedelta(hours=1)
"""Archives recorded this long before a run started are still checked (clocks differ)."""
Transform = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Migration:
    """One step: events of `event_type` stored at `from_version` become `to_version`.

    Steps of one type chain (1.0 -> 2.0 -> 3.0). `transform` gets a copy of the event's
    data and returns the new data; it must be deterministic so that a resumed run writes
    what an uninterrupted one would.
    """

    id: str
    event_type: str
    from_version: str
    to_version: str
    transform: Transform


@dataclass(frozen=True)
class EventRef:
    """Which event: enough to find it and to say what it is."""

    sequence: int
    event_id: str
    event_type: str
    event_version: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> EventRef:
        return cls(
            doc.get("sequence", -1),
            doc.get("eventId", "?"),
            doc.get("eventType", "?"),
            doc.get("eventVersion", "?"),
            doc.get("aggregateType", "?"),
            doc.get("aggregateId", "?"),
            doc.get("aggregateVersion", -1),
        )

    def __str__(self) -> str:
        return (
            f"#{self.sequence} {self.event_type} v{self.event_version} "
            f"({self.aggregate_type}/{self.aggregate_id}@{self.aggregate_version}, {self.event_id})"
        )


@dataclass(frozen=True)
class Failure:
    event: EventRef
    error: str

    def __str__(self) -> str:
        return f"{self.event}: {self.error}"

    def to_document(self, target: str) -> Document:
        """One row of `esmongo_migration_failures`: every failure of a run is kept there."""
        return {"target": target, **dataclasses.asdict(self.event), "error": self.error}


@dataclass(frozen=True)
class Change:
    """How many events of one stored (type, version) the migration changes, and to what."""

    event_type: str
    from_version: str
    to_version: str
    count: int
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    event: EventRef
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    to_version: str


@dataclass
class DryRunReport:
    source: str
    total: int
    """Events in the source: all of them are copied."""
    changes: list[Change]
    samples: list[Sample]
    failures: list[Failure]
    failure_count: int

    @property
    def would_change(self) -> int:
        return sum(c.count for c in self.changes)


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


# ---- the migrator ------------------------------------------------------------------


class Migrator:
    """Copy-transform the events collection into a new one, verify, switch.

    `source` defaults to the active events collection. With a `registry`, every
    transformed event is validated against the schema of its new version (a violation is
    a failure). `batch_size` documents are inserted per `insert_many`. Reports hold the
    first `max_listed` failures and count them all; a run also keeps every failure in
    `esmongo_migration_failures` (`{target, sequence, event_id, ..., error}`).
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        migrations: Sequence[Migration],
        *,
        source: str | None = None,
        registry: SchemaRegistry | None = None,
        batch_size: int = 1000,
        max_listed: int = MAX_LISTED,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.db = db
        self.max_listed = max_listed
        self.migrations = list(migrations)
        self.registry = registry
        self.batch_size = batch_size
        self._source = source
        self._steps: dict[tuple[str, str], Migration] = {}
        ids = [m.id for m in self.migrations]
        if len(set(ids)) != len(ids):
            raise ValueError("migration ids must be unique")
        for migration in self.migrations:
            key = (migration.event_type, migration.from_version)
            if key in self._steps:
                raise ValueError(f"two migrations start from {key[0]} v{key[1]}")
            if migration.from_version == migration.to_version:
                raise ValueError(f"migration {migration.id} does not change the version")
            self._steps[key] = migration
        for event_type, version in self._steps:
            if self.chain(event_type, version) is None:
                raise ValueError(f"migrations of {event_type} loop from v{version}")

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.migrations]

    def chain(self, event_type: str, version: str) -> list[Migration] | None:
        """The steps an event stored at `version` goes through; None when they loop."""
        return version_chain(self._steps, event_type, version)

    async def source_name(self) -> str:
        if self._source is None:
            self._source = await active_events_collection(self.db)
        return self._source

    def transform(self, doc: Document, now: datetime) -> tuple[Document, bool]:
        """The document to write for a source document, and whether it changed.

        Raises whatever the transform raises, or MigrationError when its output is not
        valid for the new version.
        """
        steps = self.chain(doc["eventType"], doc["eventVersion"]) or []
        if not steps:
            return doc, False
        data: Mapping[str, Any] = doc["data"]
        for step in steps:
            data = step.transform(copy.deepcopy(data))
            if not isinstance(data, Mapping):
                raise MigrationError(f"migration {step.id} returned {type(data).__name__}")
        to_version = steps[-1].to_version
        if self.registry is not None:
            violations = self.registry.violations(doc["eventType"], to_version, data)
            if violations:
                details = "; ".join(str(v) for v in violations)
                raise MigrationError(f"invalid as {doc['eventType']} v{to_version}: {details}")
        out = dict(doc)
        out["data"] = dict(data)
        out["eventVersion"] = to_version
        out["migration"] = {
            "ids": [s.id for s in steps],
            "fromVersion": doc["eventVersion"],
            "migratedAt": now,
        }
        return out, True

    # ---- dry run ------------------------------------------------------------------

    async def plan(self) -> list[Change]:
        """What would change, counted by one `$group` (no transform runs)."""
        source = self.db[await self.source_name()]
        types = sorted({m.event_type for m in self.migrations})
        pipeline: list[Document] = [
            {"$match": {"eventType": {"$in": types}}},
            {"$group": {"_id": {"t": "$eventType", "v": "$eventVersion"}, "n": {"$sum": 1}}},
        ]
        changes = []
        async for doc in await source.aggregate(pipeline):
            event_type, version = doc["_id"]["t"], doc["_id"]["v"]
            steps = self.chain(event_type, version) or []
            if steps:
                changes.append(
                    Change(
                        event_type,
                        version,
                        steps[-1].to_version,
                        int(doc["n"]),
                        tuple(s.id for s in steps),
                    )
                )
        return sorted(changes, key=lambda c: (c.event_type, c.from_version))

    async def dry_run(self, samples: int = 3, progress: Progress | None = None) -> DryRunReport:
        """Run every transform on the events it targets, writing nothing: what would change
        (counts per type and version), a few before/after samples per (type, version), and
        every failure."""
        name = await self.source_name()
        source = self.db[name]
        changes = await self.plan()
        total_changes = sum(c.count for c in changes)
        now = utc_now()
        report = DryRunReport(name, await source.count_documents({}), changes, [], [], 0)
        done = 0
        for change in changes:
            query = {"eventType": change.event_type, "eventVersion": change.from_version}
            kept = 0
            async for doc in source.find(query):  # any order: no blocking sort
                done += 1
                try:
                    out, _ = self.transform(doc, now)
                except Exception as exc:
                    report.failure_count += 1
                    if len(report.failures) < self.max_listed:
                        report.failures.append(Failure(EventRef.of(doc), _describe(exc)))
                    continue
                if kept < samples:
                    kept += 1
                    report.samples.append(
                        Sample(EventRef.of(doc), doc["data"], out["data"], out["eventVersion"])
                    )
                if progress is not None and done % self.batch_size == 0:
                    progress(done, total_changes)
        if progress is not None:
            progress(done, total_changes)
        return report

    # ---- copy ---------------------------------------------------------------------

    async def run(self, target: str, progress: Progress | None = None) -> RunReport:
        """Copy every source event after the target's highest sequence into `target`,
        transformed where a migration applies. Resumable: call again after an interruption.

        `progress(done, total)` is called after each batch. A failure stops the writing but
        not the scan, so the report lists every failure; the run can then be resumed once
        the transform is fixed.
        """
        started = time.perf_counter()
        source_name = await self.source_name()
        source = self.db[source_name]
        sink = self.db.get_collection(target, write_concern=DURABLE)
        checkpoint = await self._claim(source_name, target)
        await sink.create_indexes(EVENT_INDEXES)
        resumed_after = await _resume_point(sink, checkpoint)
        query = {"sequence": {"$gt": resumed_after}}
        total = await _remaining(self.db, source, sink, resumed_after)
        now = utc_now()
        report = RunReport(
            source=source_name,
            target=target,
            resumed_after=resumed_after,
            scanned=0,
            copied=0,
            transformed=0,
            last_sequence=resumed_after,
            failures=[],
            failure_count=0,
            elapsed_s=0.0,
        )
        batch: list[Document] = []
        failed: list[Document] = []
        failures = self.db[FAILURES]
        await failures.delete_many({"target": target})  # a resume meets them all again
        cursor = source.find(query, sort=[("sequence", ASCENDING)], batch_size=self.batch_size)
        async with cursor:
            async for doc in cursor:
                report.scanned += 1
                try:
                    out, changed = self.transform(doc, now)
                except Exception as exc:
                    failure = Failure(EventRef.of(doc), _describe(exc))
                    report.failure_count += 1
                    if len(report.failures) < self.max_listed:
                        report.failures.append(failure)
                    failed.append(failure.to_document(target))
                    if len(failed) >= self.batch_size:
                        await failures.insert_many(failed)
                        failed.clear()
                else:
                    # After a failure nothing more is written, so the target stays a
                    # gap-free prefix of the source; the scan goes on to list every failure.
                    if not report.failure_count:
                        batch.append(out)
                        report.transformed += changed
                        if len(batch) >= self.batch_size:
                            await self._flush(sink, batch, report)
                if progress is not None and report.scanned % self.batch_size == 0:
                    progress(report.scanned, total)
        await self._flush(sink, batch, report)
        await self._drop_archived(sink)
        if failed:
            await failures.insert_many(failed)
        if progress is not None:
            progress(report.scanned, total)
        report.elapsed_s = time.perf_counter() - started
        await self.db[MIGRATIONS].update_one(
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
        self, sink: AsyncCollection[Document], batch: list[Document], report: RunReport
    ) -> None:
        if not batch:
            return
        await sink.insert_many(batch, ordered=True)
        report.copied += len(batch)
        report.last_sequence = int(batch[-1]["sequence"])
        batch.clear()
        await self.db[MIGRATIONS].update_one(
            {"_id": report.target}, {"$set": {"lastSequence": report.last_sequence}}
        )

    async def _drop_archived(self, sink: AsyncCollection[Document]) -> None:
        """Take out of the target the streams archived since this run started: they moved
        to `events_archive` after being copied. Archived events are not migrated (upcasters
        still apply when they are read), and a stream lives in one collection only."""
        run = await self.db[MIGRATIONS].find_one({"_id": sink.name})
        if run is None:
            return
        since = run["startedAt"] - ARCHIVE_CLOCK_MARGIN
        async for record in self.db[ARCHIVED_STREAMS].find({"archivedAt": {"$gte": since}}):
            await sink.delete_many(
                {"aggregateType": record["aggregateType"], "aggregateId": record["aggregateId"]}
            )

    async def _claim(self, source: str, target: str) -> int:
        """Record this run, or check that a resumed one copies the same way. Returns the
        last sequence the run recorded as copied (0 for a new run)."""
        if target == source:
            raise MigrationError("the target must be a new collection, not the source")
        if target == await active_events_collection(self.db):
            raise MigrationError(f"{target} is the active events collection")
        runs = self.db[MIGRATIONS]
        run = await runs.find_one({"_id": target})
        if run is None:
            if await self.db[target].find_one({}, projection={"_id": 1}) is not None:
                raise MigrationError(
                    f"{target} already holds documents that no migration wrote: choose a new name"
                )
            now = utc_now()
            await runs.insert_one(
                {
                    "_id": target,
                    "source": source,
                    "migrationIds": self.ids,
                    "status": "running",
                    "startedAt": now,
                    "updatedAt": now,
                    "copied": 0,
                    "transformed": 0,
                    "lastSequence": 0,
                }
            )
            return 0
        if run["source"] != source or list(run["migrationIds"]) != self.ids:
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

    # ---- verify and switch --------------------------------------------------------

    def planned(self, event_type: str, version: str) -> tuple[list[str], str] | None:
        """The migration ids an event stored at `version` goes through, and its new version."""
        steps = self.chain(event_type, version)
        return ([m.id for m in steps], steps[-1].to_version) if steps else None

    async def verify(
        self,
        target: str,
        progress: Progress | None = None,
        *,
        after_sequence: int = 0,
        through: int | None = None,
    ) -> VerifyReport:
        """Compare the source and `target` (see `switchover.verify_copy`): `ok` or what
        differs. A full pass that is ok records how far it verified (`verifiedThrough`).

        By default it checks what the target holds so far (through its highest sequence),
        so it passes while the application keeps appending; the switch checks the rest
        with writes paused."""
        if through is None:
            through = await max_sequence(self.db[target])
            if not through and await self.db[await self.source_name()].find_one({}) is not None:
                report = VerifyReport(await self.source_name(), target)
                report.problem(f"{target} holds no event yet: run the migration first")
                return report
        return await verify_copy(
            self.db,
            await self.source_name(),
            target,
            self.planned,
            batch_size=self.batch_size,
            progress=progress,
            after_sequence=after_sequence,
            through=through,
        )

    async def switch(
        self, target: str, *, catch_up: bool = True, tail_only: bool = False
    ) -> VerifyReport:
        """Make `target` the active events collection, keeping the source for audit.

        Closes the write fence on the source first (esmongo.store.fence: every append in flight
        commits before it, none after), copies what was appended since the last run
        (`catch_up`), verifies up to the head, and only then makes the target active and
        opens the fence on it, in one transaction. On any failure the fence reopens on the
        source and nothing is switched (MigrationError). Processes still writing to the
        source are refused (EventsCollectionSealed): restart them so they open the new
        collection.

        Writes pause while the fence is closed, for as long as the verification takes.
        With `tail_only`, after a full `verify()` that passed, only what was copied since
        is compared (plus the counts of the verified prefix): a short pause on a large
        store, trusting that nothing but this migrator wrote to the target in between.
        """
        source = await self.source_name()
        if source != await active_events_collection(self.db):
            raise MigrationError(f"{source} is not the active events collection")
        after = 0
        if tail_only:
            run_doc = await self.db[MIGRATIONS].find_one({"_id": target})
            after = int((run_doc or {}).get("verifiedThrough") or 0)
            if not after:
                raise MigrationError(f"{target} has no passed full verification: run verify()")
        reason = switch_reason(target)
        head = await fence.close(self.db, source, reason)
        try:
            await pause_point("switch:fenced")
            await seal(self.db, source)  # also refuse writers that bypass the store
            if catch_up:
                run = await self.run(target)
                if not run.complete:
                    raise MigrationError(
                        f"catching up failed on {run.failure_count} event(s); "
                        f"first: {run.failures[0]}"
                    )
            report = await self.verify(target, after_sequence=after, through=head)
            if not report.ok:
                first = report.problems[0] if report.problems else "the checksums differ"
                raise MigrationError(
                    f"verification of {target} failed ({report.problem_count} problem(s)); "
                    f"first: {first}"
                )
            await record_switch(self.db, source, target, self.ids)
        except BaseException:
            await unseal(self.db, source)
            await fence.open_on(self.db, source, reason)
            raise
        return report


async def _resume_point(sink: AsyncCollection[Document], checkpoint: int) -> int:
    """The target's highest sequence. The target is a gap-free prefix of the source and the
    run records its last flushed batch, so only what a crash left after that is read (an
    index range; a descending sort over the whole index is a scan on some servers)."""
    if checkpoint and await sink.find_one({"sequence": checkpoint}, projection={"_id": 1}) is None:
        return await max_sequence(sink)  # the target lost its tail: trust only what it holds
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
    counter = await db["counters"].find_one({"_id": SEQUENCE_COUNTER})
    if counter is not None and source.name == await active_events_collection(db):
        return max(int(counter["value"]) - after, 0)
    return max(await source.count_documents({}) - await sink.count_documents({}), 0)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
