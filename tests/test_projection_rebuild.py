"""Blue/green rebuild: build beside the live read model, swap by rename while readers read."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.bank import AccountsReadModel, bank_projections
from esmongo.projections import Checkpoints, ProjectionDaemon, RunnerOptions, rebuild
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
