"""Blue/green rebuild: build beside the live read model, swap by rename while readers read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.bank import AccountsReadModel, bank_projections
from esmongo.projections import (
    Checkpoints,
    ProjectionDaemon,
    ProjectionRunner,
    RunnerOptions,
    rebuild,
)
from esmongo.projections.swap import finish_swap
from projection_helpers import BankLoad, all_events, assert_same, fold, read_models

Db = AsyncDatabase[dict[str, Any]]


async def test_blue_green_swap_while_a_reader_keeps_reading(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    load = BankLoad(store, seed=3)
    await load.append(1500)
    daemon = ProjectionDaemon(
        store, bank_projections(), RunnerOptions(batch_size=200, lease_ttl_s=2, standby_poll_s=0.1)
    )
    daemon.start()
    await daemon.wait_until(await store.head_sequence(), timeout_s=60)
    known = [a.id for a in load.accounts]
    reads = {"ok": 0, "missing": 0, "errors": 0}
    stop = asyncio.Event()

    async def reader() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                doc = await db["accounts_read"].find_one({"accountId": known[i % len(known)]})
                count = await db["accounts_read"].count_documents({})
            except Exception:
                reads["errors"] += 1
                continue
            if doc is None or count < len(known):
                reads["missing"] += 1
            else:
                reads["ok"] += 1
            await asyncio.sleep(0)

    progress: list[tuple[int, int]] = []
    reading = asyncio.create_task(reader())
    writing = asyncio.create_task(load.run(400, per_second=200))
    try:
        result = await rebuild(
            store,
            AccountsReadModel(),
            progress=lambda position, head: progress.append((position, head)),
            batch_size=300,
            lease_ttl_s=2,
        )
        await writing
        await daemon.wait_until(await store.head_sequence(), timeout_s=60)
    finally:
        stop.set()
        await reading
        await daemon.stop()
    assert reads["ok"] > 20 and reads["missing"] == 0 and reads["errors"] == 0, reads
    assert progress and progress[-1][0] == result.position
    assert result.generation == 1 and result.collections == {"accounts_read": "accounts_read__v1"}
    assert result.events >= 1500
    names = await db.list_collection_names()
    assert "accounts_read" in names and "accounts_read__v1" not in names
    indexes = {i["name"] async for i in await db["accounts_read"].list_indexes()}
    assert {"account_id", "owner", "status", "balance"} <= indexes
    record = await db["projection_rebuilds"].find_one({"_id": result.rebuild_id})
    assert record is not None and record["status"] == "swapped"
    checkpoint = await Checkpoints(db).get("accounts_read")
    assert checkpoint is not None and checkpoint.generation == 1
    assert checkpoint.pending_swap is None
    assert await Checkpoints(db).get("accounts_read@rebuild") is None
    assert_same(fold(await all_events(store)), await read_models(db))


async def test_an_interrupted_swap_is_finished_by_the_next_holder(db: Db) -> None:
    """The rebuild died after recording its intent: whoever holds the lease next finishes."""
    store = EventStore(db)
    await store.init()
    await BankLoad(store).append(200)
    await db["accounts_read"].insert_one({"accountId": "stale"})
    await db["accounts_read__v7"].insert_one({"accountId": "built"})
    checkpoints = Checkpoints(db)
    await checkpoints.raise_fence("accounts_read", 4)
    await checkpoints.collection.update_one(
        {"_id": "accounts_read"},
        {
            "$set": {
                "pendingSwap": {
                    "collections": {"accounts_read": "accounts_read__v7"},
                    "position": 123,
                    "shadow": "accounts_read@rebuild",
                }
            }
        },
    )
    assert await finish_swap(db, "accounts_read", 4)
    assert [d["accountId"] async for d in db["accounts_read"].find({})] == ["built"]
    checkpoint = await checkpoints.get("accounts_read")
    assert checkpoint is not None
    assert (checkpoint.position, checkpoint.pending_swap, checkpoint.generation) == (123, None, 1)
    assert not await finish_swap(db, "accounts_read", 4)  # nothing left to do


class _Crash(Exception):
    """Stands for the rebuild's process dying at a hook point."""


async def _index_names(db: Db, collection: str) -> set[str]:
    return {i["name"] async for i in await db[collection].list_indexes()}


async def _live_bank(db: Db) -> EventStore:
    store = EventStore(db)
    await store.init()
    await BankLoad(store, seed=5).append(600)
    for projection in bank_projections():
        runner = ProjectionRunner(store, projection)
        await runner.init()
        await runner.catch_up()
    return store


ALL_ACCOUNT_INDEXES = {"_id_", "account_id", "owner", "status", "balance"}


async def test_deferred_indexes_are_built_before_the_swap_after_a_crash_between(
    db: Db,
) -> None:
    """A rebuild that fills with the unique index only and dies before building the others
    resumes: it builds them, and the swapped-in read model has every index."""
    store = await _live_bank(db)
    seen: dict[str, set[str]] = {}

    def crash_when_filled(point: str) -> None:
        if point == "filled":
            raise _Crash

    with pytest.raises(_Crash):
        await rebuild(store, AccountsReadModel(), defer_indexes=True, hook=crash_when_filled)
    # Filled, with the key's unique index and no other; the live model untouched.
    assert await _index_names(db, "accounts_read__v1") == {"_id_", "account_id"}
    assert await db["accounts_read__v1"].count_documents({}) == len(
        fold(await all_events(store))["accounts_read"]
    )
    assert await _index_names(db, "accounts_read") == ALL_ACCOUNT_INDEXES
    checkpoint = await Checkpoints(db).get("accounts_read")
    assert checkpoint is not None and checkpoint.generation == 0

    async def look(point: str) -> None:
        seen[point] = await _index_names(db, "accounts_read__v1")
        live = await Checkpoints(db).get("accounts_read")
        assert live is not None and live.generation == 0 and live.pending_swap is None

    await BankLoad(store, seed=6).append(50)  # more events while it was down
    first = await db["projection_rebuilds"].find_one({})
    result = await rebuild(store, AccountsReadModel(), defer_indexes=False, hook=look)
    assert first is not None and result.rebuild_id == first["_id"]  # resumed, not restarted
    # Deferred as it started, whatever the second call said; all built before the swap.
    assert seen == {"filled": {"_id_", "account_id"}, "indexed": ALL_ACCOUNT_INDEXES}
    assert result.generation == 1 and result.index_build_s > 0
    assert await _index_names(db, "accounts_read") == ALL_ACCOUNT_INDEXES
    assert "accounts_read__v1" not in await db.list_collection_names()
    expected = fold(await all_events(store))["accounts_read"]  # the others are not running
    assert_same({"accounts_read": expected}, await read_models(db))


async def test_a_rebuild_fills_with_every_index_unless_told_to_defer(db: Db) -> None:
    """The default: the new collection has all its indexes before the first write."""
    store = await _live_bank(db)
    seen: dict[str, set[str]] = {}

    async def look(point: str) -> None:
        seen[point] = await _index_names(db, "accounts_read__v1")

    result = await rebuild(store, AccountsReadModel(), hook=look)
    assert seen == {"filled": ALL_ACCOUNT_INDEXES, "indexed": ALL_ACCOUNT_INDEXES}
    assert result.index_build_s == 0
    assert_same(fold(await all_events(store)), await read_models(db))
