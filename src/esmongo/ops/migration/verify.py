"""Whether a copy may replace its source: one merge pass over both, by sequence."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.migration.active import log_head, max_sequence
from esmongo.ops.migration.plan import MAX_LISTED, Planned, Progress
from esmongo.store.chain import HASH, SOURCE_HASH, unchained
from esmongo.store.collections import ARCHIVE, MIGRATIONS
from esmongo.store.layout import log_database

IDENTITY = ("sequence", "eventId", "aggregateType", "aggregateId", "aggregateVersion")
"""What must be identical in a copy, transformed or not: the checksum covers these."""


@dataclass
class VerifyReport:
    source: str
    target: str
    verified_from: int = 1
    """The first sequence compared (above 1 for a tail check after a full one)."""
    source_count: int = 0
    target_count: int = 0
    transformed: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    problems: list[str] = field(default_factory=list)
    """The first MAX_LISTED problems; `problem_count` counts them all."""
    problem_count: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.problem_count == 0
            and self.source_count == self.target_count
            and self.source_checksum == self.target_checksum
        )

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(text)


async def verify_copy(
    db: AsyncDatabase[Document],
    source: str,
    target: str,
    planned: Planned,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
    after_sequence: int = 0,
    through: int | None = None,
) -> VerifyReport:
    """Compare source and target in one merge pass by sequence.

    Checks: the same events (count and sequences), a target sequence with no gap (the
    sequences of archived events, which live in `events_archive`, count as present), each
    stream's versions contiguous in the target, equal checksums over IDENTITY, untouched
    events identical field for field, transformed ones keeping ids, metadata and time and
    carrying the migration record that `planned` expects. A copy run that recorded
    failures fails too. Lists what differs; `ok` only when nothing does.

    `after_sequence` N > 0 checks only the tail after N, and that both prefixes still hold
    as many events as the full verification up to N saw (`verifiedThrough`,
    `verifiedCount` of the run): for a switch, so that the pause in writes lasts as long
    as the tail, not the whole store.

    `through` T bounds the check to sequences up to T, so that it can pass while writes
    continue (what is appended after T is the switch's tail, checked under the fence).
    """
    started = time.perf_counter()
    report = VerifyReport(source, target, verified_from=after_sequence + 1)
    run = await db[MIGRATIONS].find_one({"_id": target})
    if run is None:
        report.problem(f"{target} was not written by a migration")
    elif run.get("failureCount"):
        report.problem(f"the copy into {target} had {run['failureCount']} failure(s)")
    bounds: Document = {"$gt": after_sequence}
    if through is not None:
        bounds["$lte"] = through
    tail: Document = {"sequence": bounds}
    # Whole-collection counts (cheap, unlike filtered ones); the prefix is what the tail is not.
    log = await log_database(db)
    held = [await log[name].count_documents({}) for name in (source, target)]
    total = held[0] - (int(run.get("verifiedCount", 0)) if run and after_sequence else 0)
    source_hash, target_hash = hashlib.sha256(), hashlib.sha256()
    versions: dict[tuple[str, str], int] = {}
    previous = after_sequence
    ids_only = {"_id": 1}
    async with (
        contextlib.aclosing(_ordered(log[source], tail, batch_size)) as src,
        contextlib.aclosing(_ordered(log[target], tail, batch_size)) as dst,
        contextlib.aclosing(_ordered(log[ARCHIVE], tail, batch_size, ids_only)) as moved,
    ):
        s, t = await anext(src, None), await anext(dst, None)
        a = await anext(moved, None)
        while s is not None or t is not None:
            if t is None or (s is not None and s["sequence"] < t["sequence"]):
                assert s is not None
                report.source_count += 1
                _digest(source_hash, s)
                report.problem(f"#{s['sequence']} is missing from {target}")
                s = await anext(src, None)
                continue
            report.target_count += 1
            _digest(target_hash, t)
            sequence = t["sequence"]
            archived = 0  # archived sequences between the previous one and this one
            while a is not None and a["_id"] < sequence:
                archived += a["_id"] > previous
                a = await anext(moved, None)
            if (previous or archived) and sequence != previous + 1 + archived:
                report.problem(f"{target}: sequence jumps from #{previous} to #{sequence}")
            previous = sequence
            stream = (t["aggregateType"], t["aggregateId"])
            # A stream first met in a tail continues from its verified prefix.
            before = versions.get(stream, t["aggregateVersion"] - 1 if after_sequence else 0)
            if t["aggregateVersion"] != before + 1:
                report.problem(
                    f"{target}: {stream[0]}/{stream[1]} goes from version {before} "
                    f"to {t['aggregateVersion']} at #{sequence}"
                )
            versions[stream] = t["aggregateVersion"]
            if s is None or sequence < s["sequence"]:
                report.problem(f"#{sequence} in {target} is not in {source}")
                t = await anext(dst, None)
                continue
            report.source_count += 1
            _digest(source_hash, s)
            report.transformed += _compare(s, t, planned, report)
            if progress is not None and report.source_count % batch_size == 0:
                progress(report.source_count, total)
            s, t = await anext(src, None), await anext(dst, None)
    if progress is not None:
        progress(report.source_count, total)
    report.source_checksum = source_hash.hexdigest()
    report.target_checksum = target_hash.hexdigest()
    report.elapsed_s = time.perf_counter() - started
    if after_sequence:
        verified = int((run or {}).get("verifiedCount", -1))
        prefix = (held[0] - report.source_count, held[1] - report.target_count)
        if prefix != (verified, verified):
            report.problem(
                f"up to #{after_sequence}: {source} holds {prefix[0]} events, {target} "
                f"{prefix[1]}, the full verification saw {verified}"
            )
    if report.source_count != report.target_count:
        report.problem(
            f"{source} holds {report.source_count} events, {target} {report.target_count}"
            + (f" after #{after_sequence}" if after_sequence else "")
        )
    if not after_sequence and through is not None:
        held = [report.source_count, report.target_count]  # the verified prefix
    if run is not None and report.ok:
        await db[MIGRATIONS].update_one(
            {"_id": target},
            {
                "$set": {
                    "status": "verified",
                    "verifiedAt": utc_now(),
                    "verifiedThrough": previous,
                    "verifiedCount": held[1],
                }
            },
        )
    return report


async def verify_target(
    db: AsyncDatabase[Document],
    source: str,
    target: str,
    planned: Planned,
    *,
    batch_size: int,
    progress: Progress | None = None,
    after_sequence: int = 0,
    through: int | None = None,
) -> VerifyReport:
    """`verify_copy` of what `target` holds so far (through its highest sequence) unless
    `through` says otherwise, so that it passes while the application keeps appending;
    the switch checks the rest with writes paused."""
    if through is None:
        log = await log_database(db)
        through = await max_sequence(log[target], await log_head(db))
        if not through and await log[source].find_one({}) is not None:
            report = VerifyReport(source, target)
            report.problem(f"{target} holds no event yet: run the migration first")
            return report
    return await verify_copy(
        db,
        source,
        target,
        planned,
        batch_size=batch_size,
        progress=progress,
        after_sequence=after_sequence,
        through=through,
    )


def _compare(s: Document, t: Document, planned: Planned, report: VerifyReport) -> bool:
    """Check one pair of documents with the same sequence; True when transformed."""
    ref = f"#{s['sequence']}"
    for name in (*IDENTITY, "_id", "eventType", "metadata", "timestamp"):
        if s.get(name) != t.get(name):
            report.problem(f"{ref}: {name} differs ({s.get(name)!r} -> {t.get(name)!r})")
            return False
    if s.get(HASH) is not None and t.get(SOURCE_HASH, t.get(HASH)) != s[HASH]:
        report.problem(f"{ref}: the copy does not record the original's hash (its chain link)")
        return False
    plan = planned(s["eventType"], s["eventVersion"])
    if plan is None:
        if unchained(s) != unchained(t):
            report.problem(f"{ref}: changed although no migration applies to it")
        return False
    ids, to_version = plan
    record = t.get("migration") or {}
    if (
        record.get("fromVersion") != s["eventVersion"]
        or list(record.get("ids") or []) != ids
        or t["eventVersion"] != to_version
    ):
        report.problem(f"{ref}: not migrated as planned (migration record {record!r})")
        return False
    return True


def _digest(hasher: Any, doc: Mapping[str, Any]) -> None:
    hasher.update(repr(tuple(doc.get(name) for name in IDENTITY)).encode())
    hasher.update(b"\n")


async def _ordered(
    collection: AsyncCollection[Document],
    query: Document,
    batch_size: int,
    projection: Document | None = None,
) -> AsyncGenerator[Document, None]:
    cursor = collection.find(
        query, projection, sort=[("sequence", ASCENDING)], batch_size=batch_size
    )
    async with cursor:
        async for doc in cursor:
            yield doc
