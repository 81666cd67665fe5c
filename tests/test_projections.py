"""Projection runner in one process: catch-up, live hand-over, read-your-writes, fencing,
status and metrics, reset-and-replay. Real server, real change streams."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent
from esmongo.bank import AccountsReadModel, bank_projections
from esmongo.projections import (
    CheckpointConflict,
    Checkpoints,
    EventWatcher,
    LeaseLost,
    Leases,
    ProjectionDaemon,
    ProjectionRunner,
    RunnerOptions,
    RunnerState,
    projection_status,
    replay,
)
from esmongo.projections.options import CATCH_UP_EVENTS
from projection_helpers import BankLoad, all_events, assert_same, fold, read_models

Db = AsyncDatabase[dict[str, Any]]


async def make_store(db: Db) -> EventStore:
    store = EventStore(db)
    await store.init()
    return store


async def test_catch_up_builds_the_three_read_models(db: Db) -> None:
    store = await make_store(db)
    load = BankLoad(store)
    await load.append(1200)
    daemon = ProjectionDaemon(
        store, bank_projections(), RunnerOptions(batch_size=150, lease_ttl_s=3)
    )
    daemon.start()
    try:
        head = await store.head_sequence()
        await daemon.wait_until(head, timeout_s=60)
        assert_same(fold(await all_events(store)), await read_models(db))
        for runner in daemon.runners:
            assert runner.position == head
    finally:
        await daemon.stop()
    for projection in bank_projections():
        assert await Checkpoints(db).position(projection.name) == head
        lease = await Leases(db).get(projection.name)
        assert lease is not None and lease.owner is None  # released on stop


async def test_money_is_decimal128_and_the_seed_indexes_exist(db: Db) -> None:
    store = await make_store(db)
    await BankLoad(store).append(80)
    runner = ProjectionRunner(store, AccountsReadModel())
    await runner.init()
    await runner.catch_up()
    raw = db.client.get_database(db.name)  # no codec: see what is stored
    account = await raw["accounts_read"].find_one({"stats.transactionCount": {"$gt": 0}})
    assert account is not None
    assert isinstance(account["balance"], Decimal128)
    assert isinstance(account["stats"]["totalCredits"], Decimal128)
    names = {index["name"] async for index in await db["accounts_read"].list_indexes()}
    assert {"account_id", "owner", "status", "balance"} <= names
    unique = [i async for i in await db["accounts_read"].list_indexes() if i.get("unique")]
    assert [i["key"] for i in unique] == [{"accountId": 1}]


async def test_live_hand_over_under_write_load_misses_and_repeats_nothing(db: Db) -> None:
    store = await make_store(db)
    load = BankLoad(store, synthetic_time=False)
    await load.append(1500)
    states: list[tuple[int, RunnerState]] = []
    daemon = ProjectionDaemon(
        store, bank_projections(), RunnerOptions(batch_size=100, lease_ttl_s=3)
    )

    async def watch_states() -> None:
        while True:
            states.append((load.appended, daemon.runners[0].state))
            await asyncio.sleep(0.01)

    daemon.start()
    sampler = asyncio.create_task(watch_states())
    try:
        await load.run(1500, per_second=300)
        head = await store.head_sequence()
        await daemon.wait_until(head, timeout_s=60)
        assert_same(fold(await all_events(store)), await read_models(db))
    finally:
        sampler.cancel()
        await daemon.stop()
    seen = [state for _n, state in states]
    assert RunnerState.CATCHING_UP in seen
    # It went live while the writer was still appending: the hand-over happened under load.
    live_at = [n for n, state in states if state == RunnerState.LIVE]
    assert live_at and min(live_at) < 3000


async def test_wait_until_gives_read_your_writes(db: Db) -> None:
    store = await make_store(db)
    await BankLoad(store).append(20)
    daemon = ProjectionDaemon(store, bank_projections(), RunnerOptions(lease_ttl_s=3))
    daemon.start()
    try:
        account = "acc_ryw"
        await store.append(
            "account",
            account,
            [
                NewEvent("account.created", {"ownerId": "u", "ownerName": "U", "currency": "EUR"}),
                NewEvent("account.activated", {}),
            ],
        )
        for i in range(5):
            (event,) = await store.append(
                "account",
                account,
                [
                    NewEvent(
                        "account.credited",
                        {
                            "amount": Decimal("1.25"),
                            "currency": "EUR",
                            "transactionId": f"t{i}",
                            "balanceAfter": Decimal("1.25") * (i + 1),
                        },
                    )
                ],
            )
            await daemon.runner("accounts_read").wait_until(event.sequence, timeout_s=10)
            doc = await db["accounts_read"].find_one({"accountId": account})
            assert doc is not None and doc["balance"] == Decimal("1.25") * (i + 1)
            # From another process' point of view: the stored checkpoint.
            await Checkpoints(db).wait_until("transactions_read", event.sequence, timeout_s=10)
            assert await db["transactions_read"].find_one({"_id": event.event_id}) is not None
    finally:
        await daemon.stop()


async def test_wait_until_times_out(db: Db) -> None:
    await make_store(db)
    with pytest.raises(TimeoutError):
        await Checkpoints(db).wait_until("accounts_read", 5, timeout_s=0.1)


async def test_a_runner_that_lost_its_lease_cannot_move_the_checkpoint(db: Db) -> None:
    store = await make_store(db)
    load = BankLoad(store)
    await load.append(100)
    stale = ProjectionRunner(
        store, AccountsReadModel(), RunnerOptions(owner="stale", lease_ttl_s=30)
    )
    await stale.init()
    await stale.catch_up(release=False)
    before = await read_models(db)
    # Another process takes the lease over (as after an expiry during a long pause).
    version = await Leases(db).acquire("accounts_read", "usurper", 30, force=True)
    assert version is not None
    await Checkpoints(db).raise_fence("accounts_read", version)
    await load.append(50)
    with pytest.raises((CheckpointConflict, LeaseLost)):
        await stale.step()
    assert await read_models(db) == before
    assert await Checkpoints(db).position("accounts_read") == stale.position
    await stale.release()
    lease = await Leases(db).get("accounts_read")
    assert lease is not None and lease.owner == "usurper"  # the stale runner freed nothing


async def test_lease_is_exclusive_until_it_expires_on_the_server_clock(db: Db) -> None:
    leases = Leases(db)
    first = await leases.acquire("p", "a", ttl_s=0.6)
    assert first == 1
    assert await leases.acquire("p", "b", ttl_s=0.6) is None
    assert await leases.renew("p", "a", first, ttl_s=0.6)
    await asyncio.sleep(0.8)
    second = await leases.acquire("p", "b", ttl_s=5)
    assert second == 2
    assert not await leases.renew("p", "a", first, ttl_s=0.6)
    await leases.release("p", "b", second)
    assert await leases.acquire("p", "c", ttl_s=5) == 3


async def test_status_metrics_and_lag(db: Db) -> None:
    store = await make_store(db)
    await BankLoad(store, synthetic_time=False).append(300)
    runner = ProjectionRunner(store, AccountsReadModel(), RunnerOptions(batch_size=100))
    await runner.init()
    before = REGISTRY.get_sample_value(
        "esmongo_projections_events_total", {"projection": "accounts_read"}
    )
    await runner.catch_up()
    head = await store.head_sequence()
    after = REGISTRY.get_sample_value(
        "esmongo_projections_events_total", {"projection": "accounts_read"}
    )
    assert after is not None and after - (before or 0) == head
    assert (
        REGISTRY.get_sample_value("esmongo_projections_lag_events", {"projection": "accounts_read"})
        == 0
    )
    batches = REGISTRY.get_sample_value(
        "esmongo_projections_batch_duration_seconds_count", {"projection": "accounts_read"}
    )
    assert batches is not None and batches >= 3
    (status,) = await projection_status(store, ["accounts_read"])
    assert (status.position, status.lag_events, status.lag_seconds) == (head, 0, 0.0)
    assert status.state == "idle" and status.dead_letters == 0
    await asyncio.sleep(0.05)
    await BankLoad(store, seed=99, synthetic_time=False).append(40)
    (status,) = await projection_status(store, ["accounts_read"], update_metrics=True)
    assert status.lag_events == await store.head_sequence() - head
    assert status.lag_seconds > 0
    assert status.to_dict()["lagEvents"] == status.lag_events
    assert (
        REGISTRY.get_sample_value("esmongo_projections_lag_events", {"projection": "accounts_read"})
        == status.lag_events
    )


async def test_reset_and_replay_in_place(db: Db) -> None:
    store = await make_store(db)
    await BankLoad(store).append(400)
    projection = AccountsReadModel()
    runner = ProjectionRunner(store, projection)
    await runner.init()
    await runner.catch_up()
    await db["accounts_read"].update_many({}, {"$set": {"balance": Decimal("-1")}})  # damage
    seen: list[tuple[int, int]] = []
    position = await replay(store, projection, progress=lambda p, h: seen.append((p, h)))
    assert position == await store.head_sequence()
    assert seen and seen[-1][0] == position
    expected = fold(await all_events(store))
    actual = await read_models(db)
    assert_same({"accounts_read": expected["accounts_read"]}, actual)


async def test_lost_resume_token_costs_a_catch_up_read_and_is_logged(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store(db)
    watcher = EventWatcher(store, max_await_ms=100)
    wake = asyncio.Event()
    watcher.subscribe(["account.created"], wake)
    watcher.resume_token = {"_data": "00DEADBEEF"}  # as if the oplog had rolled over
    task = asyncio.create_task(watcher.run())
    try:
        with caplog.at_level(logging.WARNING, logger="esmongo.projections.watcher"):
            await asyncio.wait_for(watcher.ready.wait(), 10)
        assert watcher.tokens_lost == 1
        assert any("resume" in r.getMessage() for r in caplog.records)
        assert wake.is_set()  # everyone is woken to read by sequence
        wake.clear()
        await store.append(
            "account",
            "a1",
            [NewEvent("account.created", {"ownerId": "u", "ownerName": "U", "currency": "USD"})],
        )
        await asyncio.wait_for(wake.wait(), 5)
        assert watcher.resume_token is not None
    finally:
        task.cancel()


async def test_the_change_stream_wakes_the_runner_quickly(db: Db) -> None:
    store = await make_store(db)
    await BankLoad(store).append(30)
    daemon = ProjectionDaemon(
        store, bank_projections(), RunnerOptions(idle_poll_s=30, lease_ttl_s=3)
    )
    daemon.start()
    try:
        await daemon.wait_until(await store.head_sequence(), timeout_s=30)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        (event,) = await store.append(
            "account",
            "fast",
            [NewEvent("account.created", {"ownerId": "u", "ownerName": "U", "currency": "USD"})],
        )
        await daemon.runner("accounts_read").wait_until(event.sequence, timeout_s=5)
        # With a 30 s idle poll, only the change stream can have woken it this fast.
        assert time.monotonic() - started < 2.0
    finally:
        await daemon.stop()


async def test_one_options_object_tunes_the_daemon_and_its_runners(db: Db) -> None:
    store = EventStore(db)
    options = RunnerOptions(batch_size=40, lease_ttl_s=4)
    daemon = ProjectionDaemon(store, bank_projections(), options)
    # One owner for the process: its leases read as one daemon's.
    assert {r.owner for r in daemon.runners} == {daemon.owner}
    assert all(r.options.batch_size == 40 for r in daemon.runners)
    assert options.catch_up_size == CATCH_UP_EVENTS and options.standby_poll == 1.0
    assert RunnerOptions(batch_size=40, catch_up_batch_size=400).catch_up_size == 400
    with pytest.raises(ValueError, match="batch_size"):
        RunnerOptions(batch_size=0)
