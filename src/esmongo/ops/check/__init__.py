"""`esmongo check`: the event store's invariants, verified on a live database (an fsck).

Streaming: each pass is a merge of cursors in index order, so memory stays bounded
whatever the number of events; findings are listed up to `max_listed` per invariant and
counted beyond. What a pass finds is read again before it is reported, so an append or an
archive committing during the pass is not mistaken for damage. `repair` fixes what can be
fixed without losing anything (docs/operations.md lists what and how).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops.check.bookkeeping import (
    IDEMPOTENCY_RECORDS,
    STUCK_AFTER,
    check_checkpoints,
    check_claims,
    check_counter,
    check_transient_responses,
    check_writable,
    declare_idempotency_records,
)
from esmongo.ops.check.chain import SEQUENCE_KINDS, verify_chain
from esmongo.ops.check.repair import RepairOutcome
from esmongo.ops.check.repair import repair as _repair
from esmongo.ops.check.report import INVARIANTS, MAX_LISTED, CheckReport, Finding, Fix, Progress
from esmongo.ops.check.scope import Scope
from esmongo.ops.check.sequence import SequencePass
from esmongo.ops.check.streams import StreamPass, walk

__all__ = [
    "INVARIANTS",
    "CheckReport",
    "Finding",
    "Fix",
    "RepairOutcome",
    "check",
    "declare_idempotency_records",
    "repair",
]


async def check(
    db: AsyncDatabase[Document],
    *,
    progress: Progress | None = None,
    stuck_after: timedelta = STUCK_AFTER,
    max_listed: int = MAX_LISTED,
    settle_s: float = 1.0,
    idempotency: Sequence[str] | None = None,
    log: str | None = None,
) -> CheckReport:
    """Verify every invariant of the event store in `db`; read-only.

    `settle_s`: how long to wait, once, for appends that may still be committing when a
    sequence above the head (or a counter ahead of it) looks missing. `idempotency`: the
    application's collections of idempotency records, by default those it declared
    (`declare_idempotency_records`). `log`: check the log of that events collection,
    numbered by a sequence of its own (an `eventsourcing` application's), not the main one.
    """
    records = list(IDEMPOTENCY_RECORDS if idempotency is None else idempotency)
    started = time.perf_counter()
    scope = await Scope.of(db, log)
    report = CheckReport(scope.active, list(scope.sealed), max_listed=max_listed)
    counter = await scope.counter()
    bound = await scope.highest(int((counter or {}).get("value", 0)), scope.sealed)
    sequences = SequencePass(scope, report, bound, settle_s, progress)
    await sequences.run()
    streams = StreamPass(scope, report, progress, total=report.events)
    await streams.run()
    await _attach_duplicates(sequences, streams, report)
    await check_counter(scope, report, settle_s)
    await check_writable(scope, report, settle_s)
    if not scope.own:  # projections and idempotency records follow the main log
        await check_checkpoints(scope, report)
        await check_claims(scope, report, stuck_after, records)
        await check_transient_responses(scope, report, records)
    await _check_chain(db, report, progress, log)
    report.elapsed_s = time.perf_counter() - started
    return report


async def _check_chain(
    db: AsyncDatabase[Document], report: CheckReport, progress: Progress | None, log: str | None
) -> None:
    """The tamper-evident chain (`esmongo verify`): a break is evidence, never repaired."""
    chain = await verify_chain(db, progress=progress, max_listed=report.max_listed, log=log)
    for found in chain.breaks:
        if found.kind in SEQUENCE_KINDS:
            continue  # the sequence invariant reports it, with its repair
        report.add(
            Finding(
                "chain",
                found.problem,
                {"sequence": found.sequence},
                reason="evidence of tampering or loss: restore the event from a backup",
            )
        )
    if chain.unlisted:
        report.unlisted["chain"] = report.unlisted.get("chain", 0) + chain.unlisted


async def _attach_duplicates(
    sequences: SequencePass, streams: StreamPass, report: CheckReport
) -> None:
    """Sequences held twice, reported per stream (once read again: an archive moving it
    during the pass shows it in both), repaired with that stream."""
    for dup in sequences.duplicates.values():
        if dup.same_events:
            if not (await walk(sequences.scope, dup.stream)).split:
                continue
        elif len(await sequences.scope.located({"sequence": dup.first})) < 2:
            continue
        fix = streams.fixes.get(dup.stream)
        if fix is not None:
            reason = "repaired with its stream (see the streams finding)"
        elif not dup.same_events:
            reason = "different events share these sequences: decide by hand which stands"
        else:
            reason = "its stream is in two collections and cannot be repaired automatically"
        span = f"#{dup.first}" if dup.first == dup.last else f"#{dup.first}..#{dup.last}"
        report.add(
            Finding(
                "sequence",
                f"{dup.count} sequence(s) in {span} are held twice "
                f"({' and '.join(sorted(dup.collections))})",
                {"stream": dup.stream, "sequence": dup.first},
                fix=fix,
                reason=reason,
            )
        )


async def repair(db: AsyncDatabase[Document], report: CheckReport) -> list[RepairOutcome]:
    """Fix what `report` found repairable (each distinct fix once); check again after."""
    scope = await Scope.of(db)
    if scope.active != report.active:
        raise ValueError(
            f"this report is of {report.active}, not of the main log {scope.active}: "
            "repairs are for the main log only"
        )
    return await _repair(scope, report)
