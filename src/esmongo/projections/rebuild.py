"""Rebuilding read models: blue/green for production, reset-and-replay for development.

Blue/green: a second runner (checkpoint `<name>@rebuild`) replays every event from
sequence 0 into new versioned collections (`<collection>__v<generation>`) while the live
runner keeps the old ones current and serving. With `defer_indexes`, the new collections
are filled with only their unique indexes (the keys updates look documents up by) and get
the others once, after the catch-up and before the swap, as bulk loaders do: nothing reads
them until the rename (ADR 0007, addendum). Once the build has caught up, the rebuild takes
the live lease (fencing the live runner out), applies the last few events, records the
swap intent and renames the new collections over the old ones (`renameCollection` with
`dropTarget`). The live runner takes its lease back and goes on from the rebuilt position.
An interrupted build resumes where it stopped, the index build included.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.dead_letters import DeadLetters
from esmongo.projections.errors import RebuildError
from esmongo.projections.inline import take_back
from esmongo.projections.leases import HeldLease, Leases
from esmongo.projections.options import RunnerOptions, default_owner
from esmongo.projections.projection import Projection
from esmongo.projections.runner import ProjectionRunner
from esmongo.projections.swap import REBUILDS, collection_exists, finish_swap
from esmongo.store import EventStore, InlineSwitch

Progress = Callable[[int, int], Awaitable[None] | None]
RebuildHook = Callable[[str], Awaitable[None] | None]
"""Called with "filled" (caught up, secondary indexes not built yet) and "indexed" (every
index built, swap not started): a test stops or inspects a rebuild there."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildResult:
    """What a finished blue/green rebuild did."""

    projection: str
    rebuild_id: str
    generation: int
    collections: dict[str, str]
    """Live collection -> the built collection that replaced it."""
    position: int
    events: int
    duration_s: float
    index_build_s: float
    """Time spent building the indexes left out of the fill (0 without `defer_indexes`)."""
    swap_s: float
    """From taking the live lease to the swap done (the live runner is fenced out)."""


def needed_while_filling(index: IndexModel) -> bool:
    """Unique indexes stay during a deferred fill: upserts and updates find their document
    by these keys (without the index, each would scan), and they refuse duplicates as the
    live read model does."""
    return bool(index.document.get("unique"))


def shadow_name(projection: str) -> str:
    return f"{projection}@rebuild"


async def _start_or_resume(
    db: AsyncDatabase[Document], projection: Projection, owner: str, resume: bool, defer: bool
) -> Document:
    rebuilds = db.get_collection(REBUILDS, codec_options=CODEC_OPTIONS)
    name = projection.name
    unfinished = await rebuilds.find_one(
        {"projection": name, "status": "building"}, sort=[("startedAt", -1)]
    )
    if unfinished is not None:
        names = list(dict(unfinished["collections"]).values())
        usable = resume and all([await collection_exists(db, c) for c in names])
        if usable:
            log.info("projection %s: resuming rebuild %s", name, unfinished["_id"])
            return unfinished
        await rebuilds.update_one({"_id": unfinished["_id"]}, {"$set": {"status": "abandoned"}})
    checkpoint = await Checkpoints(db).get(name)
    generation = (checkpoint.generation if checkpoint else 0) + 1
    collections = {c: f"{c}__v{generation}" for c in projection.collections}
    for built in collections.values():
        await db.drop_collection(built)
    shadow = shadow_name(name)
    await Checkpoints(db).delete(shadow)
    await DeadLetters(db).collection.delete_many({"projection": shadow})
    doc: Document = {
        "_id": uuid.uuid4().hex,
        "projection": name,
        "generation": generation,
        "collections": collections,
        "status": "building",
        "deferIndexes": defer,
        "owner": owner,
        "startedAt": utc_now(),
    }
    await rebuilds.insert_one(doc)
    return doc


async def rebuild(
    store: EventStore,
    projection: Projection,
    *,
    progress: Progress | None = None,
    batch_size: int = 1000,
    lease_ttl_s: float = 10.0,
    owner: str | None = None,
    resume: bool = True,
    defer_indexes: bool = False,
    hook: RebuildHook | None = None,
) -> RebuildResult:
    """Build `projection` again from sequence 0 beside the live read model, then swap.

    `progress(position, head)` is called after each batch. Reads keep being served by
    the old collections until the atomic rename. `defer_indexes`: fill the new
    collections with their unique indexes only, build the others before the swap (a
    resumed rebuild keeps the choice it started with).
    """
    started = time.monotonic()
    db = store.db.with_options(codec_options=CODEC_OPTIONS)
    owner = owner or default_owner()
    record = await _start_or_resume(db, projection, owner, resume, defer_indexes)
    deferred = bool(record.get("deferIndexes"))
    collections: dict[str, str] = dict(record["collections"])
    shadow = ProjectionRunner(
        store,
        projection,
        RunnerOptions(owner=owner, batch_size=batch_size, lease_ttl_s=lease_ttl_s),
        checkpoint_name=shadow_name(projection.name),
        targets=collections,
    )
    # The new collections and their indexes (the unique ones only, when deferred).
    await shadow.init(only=needed_while_filling if deferred else None)
    live_lease: HeldLease | None = None
    index_build_s = 0.0
    try:
        await shadow.catch_up(progress, release=False)
        await _call(hook, "filled")
        if deferred:
            index_build_s = await _build_indexes(db, projection, collections)
        await _call(hook, "indexed")
        swap_started = time.monotonic()
        live_lease = await _take_live_lease(db, store.inline, projection.name, owner, lease_ttl_s)
        position = await shadow.catch_up(progress, release=False)
        checkpoints = Checkpoints(db)
        result = await checkpoints.collection.update_one(
            {"_id": projection.name, "fence": live_lease.version},
            {
                "$set": {
                    "pendingSwap": {
                        "collections": collections,
                        "position": position,
                        "shadow": shadow.name,
                        "rebuildId": record["_id"],
                    }
                }
            },
        )
        if result.matched_count != 1:
            raise RebuildError(f"lost the lease of {projection.name} before the swap")
        await finish_swap(db, projection.name, live_lease.version)
        swap_s = time.monotonic() - swap_started
    finally:
        if live_lease is not None:
            await live_lease.stop(release=True)
        await shadow.release()
    await Leases(db).collection.delete_one({"_id": shadow.name})
    duration = time.monotonic() - started
    rebuilds = db.get_collection(REBUILDS, codec_options=CODEC_OPTIONS)
    await rebuilds.update_one(
        {"_id": record["_id"]},
        {"$set": {"finishedAt": utc_now(), "durationSeconds": duration}},
    )
    log.info(
        "projection %s: rebuilt into %s up to %d in %.1fs",
        projection.name,
        collections,
        position,
        duration,
    )
    return RebuildResult(
        projection=projection.name,
        rebuild_id=str(record["_id"]),
        generation=int(record["generation"]),
        collections=collections,
        position=position,
        events=shadow.events_applied,
        duration_s=duration,
        index_build_s=index_build_s,
        swap_s=swap_s,
    )


async def _call(hook: RebuildHook | None, point: str) -> None:
    result = hook(point) if hook is not None else None
    if result is not None:
        await result


async def _build_indexes(
    db: AsyncDatabase[Document], projection: Projection, collections: dict[str, str]
) -> float:
    """Every index of the read model on the filled collections (those already there are
    left as they are, so a resumed rebuild builds what is missing). Returns the time."""
    started = time.monotonic()
    for live, built in collections.items():
        indexes = list(projection.collections.get(live, ()))
        if indexes:
            await db[built].create_indexes(indexes)
    took = time.monotonic() - started
    log.info("projection %s: indexes of %s built in %.1fs", projection.name, collections, took)
    return took


async def _take_live_lease(
    db: AsyncDatabase[Document], switch: InlineSwitch, name: str, owner: str, ttl_s: float
) -> HeldLease:
    """Take the live projection's lease from whoever has it and fence its checkpoint; an
    inline projection is taken back from the appends (esmongo.projections.inline), so its
    checkpoint is where the live read model is and no append writes it any more."""
    checkpoints, leases = Checkpoints(db), Leases(db)
    checkpoint = await checkpoints.get(name)
    floor = checkpoint.fence if checkpoint else 0
    # Forced: the live runner is fenced out, and its open transaction (if any) aborted.
    version = await leases.acquire(name, owner, ttl_s, min_version=floor, force=True)
    assert version is not None
    lease = HeldLease(leases, name, owner, version, ttl_s)
    lease.start()
    try:
        await checkpoints.raise_fence(name, version)
        async with db.client.start_session() as session:
            await take_back(session, checkpoints, switch, name, version)
    except BaseException:
        await lease.stop(release=True)
        raise
    return lease


async def reset(
    store: EventStore,
    projection: Projection,
    *,
    owner: str | None = None,
    lease_ttl_s: float = 10.0,
) -> None:
    """Empty the read model in place and move the checkpoint to 0 (development only).

    The running runner, if any, is fenced out, takes its lease back afterwards and
    replays from the start; readers see an empty, then growing, read model meanwhile.
    """
    db = store.db.with_options(codec_options=CODEC_OPTIONS)
    owner = owner or default_owner()
    lease = await _take_live_lease(db, store.inline, projection.name, owner, lease_ttl_s)
    try:
        for name in projection.collections:
            await db.drop_collection(name)
        await ProjectionRunner(store, projection).init()
        await DeadLetters(db).collection.delete_many({"projection": projection.name})
        result = await Checkpoints(db).collection.update_one(
            {"_id": projection.name, "fence": lease.version},
            {"$set": {"position": 0, "blockedAt": None, "updatedAt": utc_now()}},
        )
        if result.matched_count != 1:
            raise RebuildError(f"lost the lease of {projection.name} during the reset")
    finally:
        await lease.stop(release=True)
    log.info("projection %s: reset to position 0", projection.name)


async def replay(
    store: EventStore,
    projection: Projection,
    *,
    progress: Progress | None = None,
    batch_size: int = 1000,
    owner: str | None = None,
    lease_ttl_s: float = 10.0,
) -> int:
    """Reset in place, then replay every event now (development). Returns the position."""
    owner = owner or default_owner()
    await reset(store, projection, owner=owner, lease_ttl_s=lease_ttl_s)
    options = RunnerOptions(owner=owner, batch_size=batch_size, lease_ttl_s=lease_ttl_s)
    runner = ProjectionRunner(store, projection, options)
    return await runner.catch_up(progress)
