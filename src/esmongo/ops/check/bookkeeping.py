"""The documents beside the events: the counter (and its `writable` seal), projection
checkpoints and idempotency claims.

Idempotency records (`{_id: key, status, body, createdAt}`) belong to the application
(the service's are esmongo.api.idempotency's): it declares their collection with
`declare_idempotency_records`, or the caller of `check` names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.check.report import CheckReport, Finding, Fix
from esmongo.ops.check.scope import Scope, cursor
from esmongo.projections.checkpoints import COLLECTION as CHECKPOINTS
from esmongo.store import fence
from esmongo.store.collections import COUNTERS

STUCK_AFTER = timedelta(minutes=5)
"""A claim of the old claim/complete scheme still open after this long was abandoned."""
IDEMPOTENCY_RECORDS: list[str] = []
"""The collections of idempotency records that applications declared: what `check` reads
when its caller names none."""


def declare_idempotency_records(collection: str) -> None:
    """Have `check` read this collection's idempotency records (and `repair` fix them)."""
    if collection not in IDEMPOTENCY_RECORDS:
        IDEMPOTENCY_RECORDS.append(collection)


async def check_counter(scope: Scope, report: CheckReport, settle_s: float) -> None:
    """The counter equals the head. The head is read before the counter: an append that
    commits in between raises both, so head > counter is damage, never a race."""
    head = await scope.highest(report.head)
    counter = await scope.counter()
    value = int(counter["value"]) if counter and "value" in counter else None
    if value is not None and value > head:  # an append may be committing: look again, once
        await asyncio.sleep(settle_s)
        head = await scope.highest(head)
    report.head, report.counter = head, value
    where = {"collection": COUNTERS, "_id": scope.counter_id}
    if value is None:
        if head:
            report.add(
                Finding(
                    "counter",
                    f"there is no sequence counter but events go up to #{head}",
                    where,
                    fix=Fix("raise_counter", {"head": head}),
                    reason=f"create it at #{head}",
                )
            )
    elif head > value:
        report.add(
            Finding(
                "counter",
                f"the counter is at #{value} but events go up to #{head}: the next appends "
                "would take sequences already used",
                where,
                fix=Fix("raise_counter", {"head": head}),
                reason=f"raise it to #{head} ($max: it never goes down)",
            )
        )
    elif value > head:
        given = f"#{value}" if value == head + 1 else f"#{head + 1}..#{value}"
        report.add(
            Finding(
                "counter",
                f"the counter is at #{value} but the head is #{head}: {given} were given out "
                "and are not in the log",
                where,
                reason="the counter never goes down (a lost event's sequence would go to a "
                "new one): repair or restore the missing events (see the sequence findings)",
            )
        )


async def check_writable(scope: Scope, report: CheckReport, settle_s: float) -> None:
    """The write fence (the counter's `writable`) is open on the active collection. A
    closed fence is reported when it stays closed across the check (a switch holds it for
    its tail's verification; one that died holds it for ever)."""
    counter = await scope.counter() or {}
    writable = counter.get(fence.WRITABLE, scope.active)
    if writable is None and settle_s:
        await asyncio.sleep(settle_s)
        counter = await scope.counter() or {}
        writable = counter.get(fence.WRITABLE, scope.active)
    if writable == scope.active:
        return
    where = {"collection": COUNTERS, "_id": scope.counter_id}
    if writable is None:
        holder = counter.get(fence.SEALED_FOR) or "a switch or rollback"
        problem = f"appends are paused: {holder} holds the write fence"
    else:
        problem = f"appends may write to {writable}, but the active collection is {scope.active}"
    report.add(
        Finding(
            "writable",
            problem,
            where | {"writable": writable, "active": scope.active},
            fix=Fix("reopen_fence", {"writable": writable}),
            reason=f"open the fence on {scope.active}, the active collection (if a switch or "
            "rollback is still running, it fails without losing anything: run it again)",
        )
    )


async def check_checkpoints(scope: Scope, report: CheckReport) -> None:
    """Checkpoints are read before the head, so one that passes it is not a race."""
    found: list[Document] = []
    async for doc in cursor(scope.db[CHECKPOINTS], {}, [("_id", 1)], {"position": 1}):
        found.append(doc)  # one per projection: small
    head = await scope.highest(report.head)
    for doc in found:
        position = int(doc.get("position", 0))
        if position > head:
            report.add(
                Finding(
                    "checkpoints",
                    f"projection {doc['_id']} is at #{position}, past the head #{head}",
                    {"projection": doc["_id"], "position": position, "head": head},
                    reason="its read model holds effects of events the log lacks, which "
                    "lowering the checkpoint would keep: restore the missing events, or "
                    "rebuild the projection (esmongo projections rebuild NAME)",
                )
            )


async def check_claims(
    scope: Scope, report: CheckReport, stuck_after: timedelta, records: Sequence[str]
) -> None:
    """Claims (`status: null`) of the old claim/complete scheme, open for too long: a crash
    between the command and its stored response left them, and every retry gets 409."""
    before = utc_now() - stuck_after
    query = {"status": {"$type": "null"}, "createdAt": {"$lt": before}}
    projection = {"createdAt": 1}
    for name in records:
        async for doc in cursor(scope.db[name], query, [("_id", 1)], projection):
            _stuck_claim(report, name, doc)


def _stuck_claim(report: CheckReport, collection: str, doc: Document) -> None:
    claim = {"collection": collection, "key": doc["_id"], "createdAt": doc["createdAt"]}
    report.add(
        Finding(
            "idempotency",
            f"an idempotency key is claimed since {doc['createdAt'].isoformat()} with no "
            "response: every retry with it is refused",
            {"collection": collection, "key": doc["_id"]},
            fix=Fix("release_claim", claim),
            reason="delete the claim: the retry runs the command again, which records "
            "nothing twice (its event ids are derived from the key)",
        )
    )


TRANSIENT = {"status": 409, "body": {"$regex": '"code": ?"concurrency_conflict"'}}
"""A stored conflict (item 14 of issue 10): a transient outcome the retry should have run
again, replayed to every retry instead."""


async def check_transient_responses(
    scope: Scope, report: CheckReport, records: Sequence[str]
) -> None:
    for name in records:
        async for doc in cursor(scope.db[name], TRANSIENT, [("_id", 1)], {"_id": 1}):
            report.add(
                Finding(
                    "idempotency",
                    "an idempotency key stores a 409 concurrency_conflict: every retry with "
                    "it replays that transient conflict instead of running again",
                    {"collection": name, "key": doc["_id"]},
                    fix=Fix("forget_response", {"collection": name, "key": doc["_id"]}),
                    reason="delete it: the command recorded nothing, its retry runs it again",
                )
            )
