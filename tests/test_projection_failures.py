"""Poison events: retries with backoff, dead letters, skip or stop, retry after the fix, discard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, RecordedEvent
from esmongo.bank import AccountsReadModel, TransactionsReadModel
from esmongo.projections import (
    Checkpoints,
    DeadLetterError,
    DeadLetters,
    Insert,
    ProjectionBlocked,
    ProjectionDaemon,
    ProjectionRunner,
    RunnerOptions,
    RunnerState,
    Update,
    projection_status,
)
from projection_helpers import all_events, assert_same, fold, loaded_store, read_models

Db = AsyncDatabase[dict[str, Any]]


class PoisonedTransactions(TransactionsReadModel):
    """transactions_read with a bug: it fails on movements whose reason is "poison"."""

    max_attempts = 3
    retry_backoff_s = 0.01
    broken = True
    calls = 0

    def moved(self, event: RecordedEvent) -> Insert:
        if event.data.get("reason") == "poison":
            type(self).calls += 1
            if self.broken:
                raise ValueError(f"cannot project {event.event_id}: poison")
        return super().moved(event)


class PoisonedAccounts(AccountsReadModel):
    max_attempts = 2
    retry_backoff_s = 0.01
    broken = True

    def moved(self, event: RecordedEvent) -> Update:
        if self.broken and event.data.get("reason") == "poison":
            raise ValueError("poison")
        return super().moved(event)


async def test_skip_policy_dead_letters_then_retry_after_the_fix(db: Db) -> None:
    store, _load = await loaded_store(db, 300, poison_every=97)
    projection = PoisonedTransactions()
    PoisonedTransactions.calls = 0
    runner = ProjectionRunner(store, projection, RunnerOptions(batch_size=64))
    await runner.init()
    await runner.catch_up()
    events = await all_events(store)
    poisoned = [e for e in events if e.data.get("reason") == "poison"]
    assert poisoned
    assert runner.position == await store.head_sequence()  # it went on past them
    assert PoisonedTransactions.calls == 3 * len(poisoned)  # every attempt was made
    dead = DeadLetters(db)
    letters = await dead.find("transactions_read")
    assert [d.sequence for d in letters] == [e.sequence for e in poisoned]
    letter = letters[0]
    assert letter.attempts == 3 and letter.error_type == "ValueError"
    assert "poison" in letter.error and "Traceback" in letter.traceback
    assert letter.event_id == poisoned[0].event_id and letter.policy == "skip"
    assert letter.first_failure_at <= letter.last_failure_at
    actual = await read_models(db)
    for event in poisoned:
        assert event.event_id not in actual["transactions_read"]
    (status,) = await projection_status(store, ["transactions_read"])
    assert status.dead_letters == len(poisoned) and status.lag_events == 0

    # Still broken: the retry fails and counts one more attempt.
    with pytest.raises(DeadLetterError):
        await dead.retry(store, projection, letter.sequence)
    again = await dead.get("transactions_read", letter.sequence)
    assert again is not None and again.attempts == 4

    # Fixed: retrying applies the event through the projection, once.
    PoisonedTransactions.broken = False
    try:
        for letter in letters:
            await dead.retry(store, projection, letter.sequence)
    finally:
        PoisonedTransactions.broken = True
    assert await dead.count("transactions_read") == 0
    expected = fold(events)
    assert_same({"transactions_read": expected["transactions_read"]}, await read_models(db))
    with pytest.raises(DeadLetterError):
        await dead.retry(store, projection, letters[0].sequence)  # gone


async def test_stop_policy_blocks_before_the_event_until_it_is_retried(db: Db) -> None:
    store, load = await loaded_store(db, 200, poison_every=0)
    await load.append(1)
    load.poison_every = 1
    await load.append(1)  # one poison movement
    load.poison_every = 0
    await load.append(100)
    events = await all_events(store)
    bad = min((e for e in events if e.data.get("reason") == "poison"), key=lambda e: e.sequence)
    PoisonedAccounts.broken = True
    projection = PoisonedAccounts()
    daemon = ProjectionDaemon(
        store, [projection], RunnerOptions(batch_size=50, lease_ttl_s=3, idle_poll_s=0.1)
    )
    daemon.start()
    try:
        runner = daemon.runner("accounts_read")
        checkpoints = Checkpoints(db)
        for _ in range(200):
            checkpoint = await checkpoints.get("accounts_read")
            # The runner notes the block in memory just after its commit: wait for both.
            if checkpoint and checkpoint.blocked_at and runner.state == RunnerState.BLOCKED:
                break
            await asyncio.sleep(0.05)
        assert checkpoint is not None
        assert (checkpoint.position, checkpoint.blocked_at) == (bad.sequence - 1, bad.sequence)
        assert runner.state == RunnerState.BLOCKED
        (status,) = await projection_status(store, ["accounts_read"])
        assert status.state == "blocked" and status.dead_letters == 1
        letter = await DeadLetters(db).get("accounts_read", bad.sequence)
        assert letter is not None and letter.policy == "stop"
        # The events after it wait: the account documents stop before the poison.
        doc = await db["accounts_read"].find_one({"accountId": bad.aggregate_id})
        assert doc is not None and doc["lastEventVersion"] < bad.aggregate_version

        PoisonedAccounts.broken = False
        await DeadLetters(db).retry(store, projection, bad.sequence)
        await runner.wait_until(await store.head_sequence(), timeout_s=20)
    finally:
        PoisonedAccounts.broken = True
        await daemon.stop()
    assert await DeadLetters(db).count() == 0
    expected = fold(events)
    assert_same({"accounts_read": expected["accounts_read"]}, await read_models(db))


async def test_catch_up_reports_a_block_and_discard_skips_the_event(db: Db) -> None:
    store, _load = await loaded_store(db, 150, poison_every=40)
    projection = PoisonedAccounts()
    runner = ProjectionRunner(store, projection, RunnerOptions(batch_size=30))
    await runner.init()
    with pytest.raises(ProjectionBlocked):
        await runner.catch_up()
    dead = DeadLetters(db)
    (letter,) = await dead.find("accounts_read")
    assert await Checkpoints(db).position("accounts_read") == letter.sequence - 1
    await dead.discard("accounts_read", letter.sequence)
    assert await Checkpoints(db).position("accounts_read") == letter.sequence
    assert await dead.count() == 0


async def test_a_write_the_server_refuses_is_isolated_to_its_event(db: Db) -> None:
    """A duplicate key fails the whole bulk write: the batch is redone one event at a time,
    and only the guilty event becomes a dead letter."""
    store, _load = await loaded_store(db, 120, poison_every=0)
    events = await all_events(store)
    victim = next(e for e in events if e.event_type == "account.credited")
    projection = TransactionsReadModel()
    projection.max_attempts = 2
    projection.retry_backoff_s = 0.01
    await ProjectionRunner(store, projection).init()
    await db["transactions_read"].insert_one({"_id": victim.event_id, "squatter": True})
    runner = ProjectionRunner(store, projection, RunnerOptions(batch_size=500))
    await runner.catch_up()
    (letter,) = await DeadLetters(db).find("transactions_read")
    assert letter.sequence == victim.sequence
    assert "duplicate key" in letter.error.lower() or "E11000" in letter.error
    stored = await read_models(db)
    expected = fold(events)["transactions_read"]
    del expected[victim.event_id]
    assert {k: v for k, v in stored["transactions_read"].items() if k != victim.event_id} == (
        expected
    )


async def test_a_restart_retries_the_blocking_event_and_goes_on_once_it_is_fixed(db: Db) -> None:
    """docs/projections.md: restarting a STOP-blocked projection tries the event again."""
    store, load = await loaded_store(db, 120, poison_every=0)
    load.poison_every = 1
    await load.append(1)  # one poison movement
    load.poison_every = 0
    await load.append(60)
    bad = min(
        (e for e in await all_events(store) if e.data.get("reason") == "poison"),
        key=lambda e: e.sequence,
    )
    PoisonedAccounts.broken = True
    try:
        first = ProjectionRunner(store, PoisonedAccounts(), RunnerOptions(batch_size=40))
        await first.init()
        with pytest.raises(ProjectionBlocked):
            await first.catch_up()
        dead = DeadLetters(db)
        letter = await dead.get("accounts_read", bad.sequence)
        assert letter is not None and letter.attempts == PoisonedAccounts.max_attempts

        # Restarted, still broken: it tries again and stays blocked; the attempts add up.
        with pytest.raises(ProjectionBlocked):
            await ProjectionRunner(
                store, PoisonedAccounts(), RunnerOptions(batch_size=40)
            ).catch_up()
        letter = await dead.get("accounts_read", bad.sequence)
        assert letter is not None and letter.attempts == 2 * PoisonedAccounts.max_attempts
        checkpoint = await Checkpoints(db).get("accounts_read")
        assert checkpoint is not None
        assert (checkpoint.position, checkpoint.blocked_at) == (bad.sequence - 1, bad.sequence)

        # The fix deployed: a new daemon (new store object) on the same database goes on.
        PoisonedAccounts.broken = False
        restarted = EventStore(db)
        daemon = ProjectionDaemon(
            restarted,
            [PoisonedAccounts()],
            RunnerOptions(batch_size=40, lease_ttl_s=3, idle_poll_s=0.1),
        )
        daemon.start()
        try:
            await daemon.runner("accounts_read").wait_until(
                await restarted.head_sequence(), timeout_s=20
            )
        finally:
            await daemon.stop()
    finally:
        PoisonedAccounts.broken = True
    assert await dead.count() == 0
    checkpoint = await Checkpoints(db).get("accounts_read")
    assert checkpoint is not None and checkpoint.blocked_at is None
    (status,) = await projection_status(store, ["accounts_read"])
    assert status.state != "blocked" and status.lag_events == 0
    expected = fold(await all_events(store))
    assert_same({"accounts_read": expected["accounts_read"]}, await read_models(db))
