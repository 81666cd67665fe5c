"""Projection workers as real processes: SIGKILL at random points during a load, and lease
takeover between three processes. The read models must equal a fold of the events, exactly."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.projections import Checkpoints, Leases
from projection_helpers import (
    READ_MODELS,
    Worker,
    all_events,
    assert_same,
    fold,
    loaded_store,
    read_models,
    spawn_worker,
)

Db = AsyncDatabase[dict[str, Any]]


async def positions(db: Db) -> dict[str, int]:
    checkpoints = Checkpoints(db)
    return {name: await checkpoints.position(name) for name in READ_MODELS}


async def wait_caught_up(db: Db, store: EventStore, timeout_s: float) -> None:
    head = await store.head_sequence()
    for name in READ_MODELS:
        await Checkpoints(db).wait_until(name, head, timeout_s=timeout_s)


async def test_sigkill_at_random_points_during_a_5000_event_load(
    db: Db, server_uri: str, tmp_path: Path
) -> None:
    store, load = await loaded_store(db, 300, seed=11)
    spawned: list[Worker] = []
    writer = asyncio.create_task(load.run(4700, per_second=260))
    try:
        rng = random.Random(2024)
        kills: list[dict[str, int]] = []
        n = 0
        while len(kills) < 10 or not writer.done():
            n += 1
            # Half the workers also kill themselves at random between the steps of a batch
            # (after the read, after the checkpoint update, after the writes, before and
            # after the commit), so deaths land between any two operations.
            worker = await spawn_worker(
                server_uri,
                db.name,
                f"w{n}",
                tmp_path,
                lease_ttl=1.0,
                kill_probability=0.02 if n % 2 else 0.0,
            )
            spawned.append(worker)
            await worker.ready()
            # Let it take over (the killed one's lease expires first), then work a while.
            await worker.holds_leases(db, READ_MODELS, timeout_s=20)
            try:
                await asyncio.wait_for(worker.process.wait(), rng.uniform(0.2, 1.2))
            except TimeoutError:
                worker.kill()
            await worker.process.wait()
            assert worker.process.returncode == -9, worker.log.read_text()[-3000:]
            kills.append(await positions(db))
            if n > 60:
                raise AssertionError("the load did not finish")
        await writer
        assert load.appended >= 5000
        head = await store.head_sequence()
        # The killed workers did real work, at many different places.
        progress = {p["accounts_read"] for p in kills}
        assert len(progress) >= 5 and any(0 < p < head for p in progress), kills
        final = await spawn_worker(server_uri, db.name, "final", tmp_path, lease_ttl=1.0)
        spawned.append(final)
        await final.ready()
        assert await final.holds_leases(db, READ_MODELS, timeout_s=30)
        await wait_caught_up(db, store, timeout_s=90)
        assert await final.terminate() == 0  # SIGTERM: a clean stop
        assert_same(fold(await all_events(store)), await read_models(db))
        lease = await Leases(db).get("accounts_read")
        assert lease is not None and lease.version >= 10 and lease.owner is None
    finally:
        writer.cancel()
        for worker in spawned:
            worker.kill()
            await worker.process.wait()


async def test_three_processes_one_active_and_takeover_after_kill_9(
    db: Db, server_uri: str, tmp_path: Path
) -> None:
    store, load = await loaded_store(db, 400, seed=5)
    ttl = 1.5
    workers: dict[str, Worker] = {}
    for name in ("p1", "p2", "p3"):
        workers[name] = await spawn_worker(server_uri, db.name, name, tmp_path, lease_ttl=ttl)
    await asyncio.gather(*(w.ready() for w in workers.values()))
    leases = Leases(db)
    try:
        for _round in range(2):
            await wait_caught_up(db, store, timeout_s=60)
            holders = {(await leases.get(p)).owner for p in READ_MODELS}  # type: ignore[union-attr]
            alive = {n for n, w in workers.items() if w.process.returncode is None}
            assert holders <= alive and None not in holders
            victim = next(iter(holders))
            before = {p: await leases.get(p) for p in READ_MODELS}
            workers[victim].kill()
            await workers[victim].process.wait()
            killed_at = time.monotonic()
            await load.append(150)
            head = await store.head_sequence()
            await asyncio.gather(
                *(Checkpoints(db).wait_until(p, head, timeout_s=30) for p in READ_MODELS)
            )
            took = time.monotonic() - killed_at
            # Taken over within the lease time (plus a standby poll and the catch-up).
            assert took < ttl + 3.0, took
            for p in READ_MODELS:
                lease = await leases.get(p)
                assert lease is not None and lease.owner not in (victim, None)
                held = before[p]
                assert held is not None
                if held.owner == victim:  # taken over: a new acquisition, a new fence
                    assert lease.version > held.version
    finally:
        codes = [await w.terminate() for w in workers.values()]
    assert codes.count(0) == 1 and codes.count(-9) == 2
    assert_same(fold(await all_events(store)), await read_models(db))
