"""Moving the application to a verified copy, and back while that loses nothing.

A collection that is no longer live is sealed: a validator that no document passes, so a
process still writing to it fails loudly instead of recording events nobody reads. Sealing
is an ordinary `collMod` validator (MongoDB 3.6+), lifted again by a rollback. Appends are
excluded by the write fence on the counter (esmongo.store.fence), not by the seal: on some
servers a `collMod` does not wait for open transactions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.migration.active import active_events_collection, log_head, max_sequence
from esmongo.ops.migration.copy import copy_events
from esmongo.ops.migration.errors import MigrationError
from esmongo.ops.migration.plan import MigrationPlan
from esmongo.ops.migration.verify import VerifyReport, verify_target
from esmongo.store import fence
from esmongo.store.collections import ACTIVE, META, MIGRATIONS
from esmongo.store.layout import log_database

SEALED = {"$expr": {"$literal": False}}
"""A validator no document passes: inserts and updates into a sealed collection fail."""
ROLLBACK = "migration rollback"
PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step of a switch or rollback (to pause it there)."""


async def pause_point(name: str) -> None:
    hook = PAUSE_POINTS.get(name)
    if hook is not None:
        await hook()


async def seal(db: AsyncDatabase[Document], name: str) -> None:
    """Make a collection of the log refuse inserts and updates (a validator nothing
    passes). `db` is the main database: the collection is in its log database."""
    await (await log_database(db)).command(
        "collMod", name, validator=SEALED, validationLevel="strict", validationAction="error"
    )


async def unseal(db: AsyncDatabase[Document], name: str) -> None:
    await (await log_database(db)).command("collMod", name, validator={}, validationLevel="off")


def switch_reason(target: str) -> str:
    """What a switch to `target` writes on the fence it holds (esmongo.store.fence)."""
    return f"migration switch to {target}"


async def switch_to(
    db: AsyncDatabase[Document],
    plan: MigrationPlan,
    source: str,
    target: str,
    *,
    batch_size: int,
    max_listed: int,
    catch_up: bool = True,
    tail_only: bool = False,
) -> VerifyReport:
    """Close the fence on `source`, seal it, copy its tail, verify up to the head, then
    make `target` active; on any failure reopen `source` and switch nothing."""
    if source != await active_events_collection(db):
        raise MigrationError(f"{source} is not the active events collection")
    after = 0
    if tail_only:
        run_doc = await db[MIGRATIONS].find_one({"_id": target})
        after = int((run_doc or {}).get("verifiedThrough") or 0)
        if not after:
            raise MigrationError(f"{target} has no passed full verification: run verify()")
    reason = switch_reason(target)
    head = await fence.close(db, source, reason)
    try:
        await pause_point("switch:fenced")
        await seal(db, source)  # also refuse writers that bypass the store
        if catch_up:
            run = await copy_events(
                db, plan, source, target, batch_size=batch_size, max_listed=max_listed
            )
            if not run.complete:
                raise MigrationError(
                    f"catching up failed on {run.failure_count} event(s); first: {run.failures[0]}"
                )
        report = await verify_target(
            db,
            source,
            target,
            plan.planned,
            batch_size=batch_size,
            after_sequence=after,
            through=head,
        )
        if not report.ok:
            first = report.problems[0] if report.problems else "the checksums differ"
            raise MigrationError(
                f"verification of {target} failed ({report.problem_count} problem(s)); "
                f"first: {first}"
            )
        await record_switch(db, source, target, plan.ids)
    except BaseException:
        await unseal(db, source)
        await fence.open_on(db, source, reason)
        raise
    return report


async def record_switch(
    db: AsyncDatabase[Document], source: str, target: str, migration_ids: Sequence[str]
) -> None:
    """Make `target` active and open the write fence on it, in one transaction."""
    now = utc_now()
    await fence.open_on(
        db,
        target,
        switch_reason(target),
        meta_update={
            "$set": {"name": target, "switchedAt": now, "migrationIds": list(migration_ids)},
            "$push": {"previous": source},
        },
    )
    await db[MIGRATIONS].update_one(
        {"_id": target}, {"$set": {"status": "switched", "switchedAt": now}}
    )


async def rollback_switch(db: AsyncDatabase[Document]) -> str:
    """Make the previous events collection active again; returns its name.

    Only while lossless: refused when the active collection holds events the previous
    one lacks (appended since the switch); migrate back instead. The heads are compared
    with the write fence closed (esmongo.store.fence), so no append can commit in between; the
    active one is then sealed. Restart the processes that use the store afterwards, as
    after a switch.
    """
    meta = await db[META].find_one({"_id": ACTIVE})
    if meta is None or not meta.get("previous"):
        raise MigrationError("no switch to roll back: the events collection was never switched")
    current, previous = str(meta["name"]), str(meta["previous"][-1])
    await fence.close(db, current, ROLLBACK)
    try:
        await pause_point("rollback:fenced")
        log = await log_database(db)
        head = await log_head(db)  # no append commits while the fence is closed
        current_head = await max_sequence(log[current], head)
        previous_head = await max_sequence(log[previous], head)
        if current_head != previous_head:
            raise MigrationError(
                f"{current} holds events up to #{current_head} but {previous} only up to "
                f"#{previous_head}: rolling back would lose the events appended since the "
                "switch. Migrate them back into a new collection instead."
            )
        await unseal(db, previous)
        await fence.open_on(
            db,
            previous,
            ROLLBACK,
            meta_update={
                "$set": {"name": previous, "switchedAt": utc_now(), "rolledBackFrom": current},
                "$pop": {"previous": 1},
            },
        )
    except BaseException:
        await fence.open_on(db, current, ROLLBACK)
        raise
    await seal(db, current)
    await db[MIGRATIONS].update_one(
        {"_id": current}, {"$set": {"status": "rolled_back", "rolledBackAt": utc_now()}}
    )
    return previous
