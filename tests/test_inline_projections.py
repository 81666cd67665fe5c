"""Inline projections: read-model writes in the append's own transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import AppendRequest, EventStore, NewEvent, RecordedEvent
from esmongo.bank import AccountsReadModel, AnalyticsHourlyReadModel, Bank
from esmongo.errors import ConfigurationError
from esmongo.projections import (
    Checkpoints,
    Lifecycle,
    ProjectionDaemon,
    RunnerOptions,
    RunnerState,
    projection_status,
    rebuild,
    replay,
)
from esmongo.projections import inline as inline_module
from esmongo.projections.inline import register_inline
from esmongo.projections.projection import Projection
from esmongo.store import InlineHandlerFailed, InlineWriteFailed, batch_writer
from projection_helpers import BankLoad, all_events, fold, read_models

Db = AsyncDatabase[dict[str, Any]]
OPTIONS = RunnerOptions(batch_size=200, lease_ttl_s=2, idle_poll_s=0.05, standby_poll_s=0.1)


@pytest.fixture(autouse=True)
def no_hooks() -> Iterator[None]:
    yield
    inline_module.PAUSE_POINTS.clear()
    batch_writer.PAUSE_POINTS.clear()


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = 20) -> None:
    """Wait for a condition (a state reached), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def inline(*projections: Projection) -> list[Projection]:
    for projection in projections:
        projection.lifecycle = Lifecycle.INLINE
    return list(projections)


async def inline_store(
    db: Db, *projections: Projection
) -> tuple[EventStore, ProjectionDaemon, list[Projection]]:
    """A store applying these projections inline, and a daemon that handed them over."""
    store = EventStore(db)
    await store.init()
    chosen = inline(*(projections or (AccountsReadModel(),)))
    register_inline(store, chosen)
    daemon = ProjectionDaemon(store, chosen, OPTIONS)
    daemon.start()
    await until(lambda: all(r.state == RunnerState.INLINE for r in daemon.runners))
    return store, daemon, chosen


def created(owner: str = "u1", currency: str = "EUR") -> list[NewEvent]:
    data = {"ownerId": owner, "ownerName": owner.upper(), "currency": currency}
    return [NewEvent("account.created", data), NewEvent("account.activated", {})]


def moved(
    kind: str, amount: str, after: str, txn: str, *, reason: str | None = None, **kw: Any
) -> NewEvent:
    data = {
        "amount": Decimal(amount),
        "currency": "EUR",
        "transactionId": txn,
        "reason": reason,
        "balanceAfter": Decimal(after),
    }
    return NewEvent(f"account.{kind}", data, **kw)


async def account(db: Db, account_id: str) -> dict[str, Any] | None:
    return await db["accounts_read"].find_one({"accountId": account_id})


async def hold_first_batch(store: EventStore, first: Awaitable[Any]) -> asyncio.Event:
    """Pause the batch writer after the version check of the first batch (the one writing
    `first`), so that the appends made meanwhile queue up and go as one batch after it."""
    release = asyncio.Event()
    held = asyncio.Event()

    async def pause() -> None:
        if not held.is_set():
            held.set()
            await release.wait()

    batch_writer.PAUSE_POINTS["checked"] = pause
    task = asyncio.ensure_future(first)
    await held.wait()
    release.task = task  # type: ignore[attr-defined]
    return release


async def test_a_read_right_after_the_append_sees_it_and_the_daemon_does_not_apply_it(
    db: Db,
) -> None:
    store, daemon, _ = await inline_store(db)
    runner = daemon.runner("accounts_read")
    applied_before = runner.events_applied
    try:
        for n in range(5):
            await store.append("account", f"a{n}", created())
            recorded = await store.append(
                "account", f"a{n}", [moved("credited", "10.00", "10.00", f"t{n}")], 2
            )
            doc = await account(db, f"a{n}")  # no wait: the append's transaction wrote it
            assert doc is not None and doc["balance"] == Decimal("10.00")
            assert doc["lastEventVersion"] == 3 and doc["stats"]["transactionCount"] == 1
            assert store.inline_applied_through("accounts_read") == recorded[0].sequence
        head = await store.head_sequence()
        assert await Checkpoints(db).position("accounts_read") == head
        (status,) = await projection_status(store, ["accounts_read"])
        assert status.position == head and status.lag_events == 0 and status.inline
        await daemon.wait_until(head, timeout_s=1)
        # Several idle polls later, the runner has applied none of them itself.
        await until(lambda: runner.state == RunnerState.INLINE)
        await asyncio.sleep(0)
        assert runner.events_applied == applied_before
    finally:
        await daemon.stop()
    assert (await read_models(db))["accounts_read"] == fold(await all_events(store))[
        "accounts_read"
    ]


async def test_one_batch_of_several_appends_folds_per_document_in_order(db: Db) -> None:
    store, daemon, _ = await inline_store(db, AccountsReadModel(), AnalyticsHourlyReadModel())
    try:
        await store.append_streams(
            [AppendRequest("account", name, created()) for name in ("a", "b", "c")]
        )
        before = store.stats.transactions
        release = await hold_first_batch(
            store,
            store.append("account", "z", created()),  # a batch of its own, held
        )
        appends = [
            store.append(
                "account",
                "a",
                [
                    moved("credited", "5.00", "5.00", "a1"),
                    moved("credited", "7.00", "12.00", "a2"),
                    moved("debited", "2.00", "10.00", "a3"),
                ],
                2,
            ),
            store.append("account", "b", [moved("credited", "1.50", "1.50", "b1")], 2),
            store.append("account", "c", [moved("credited", "3.00", "3.00", "c1")], 2),
        ]
        tasks = [asyncio.ensure_future(a) for a in appends]
        await asyncio.sleep(0)  # they queue behind the held batch
        release.set()
        await release.task  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
        assert store.stats.transactions - before == 2  # the held one, then all three
        a = await account(db, "a")
        assert a is not None and a["balance"] == Decimal("10.00")
        assert a["stats"]["transactionCount"] == 3 and a["lastEventVersion"] == 5
        assert a["stats"]["totalCredits"] == Decimal("12.00")
        assert a["stats"]["totalDebits"] == Decimal("2.00")
        expected = fold(await all_events(store))
        got = await read_models(db)
        assert got["accounts_read"] == expected["accounts_read"]
        assert got["analytics_hourly"] == expected["analytics_hourly"]
    finally:
        await daemon.stop()


async def test_an_idempotent_retry_in_a_batch_is_not_applied_twice(db: Db) -> None:
    store, daemon, _ = await inline_store(db)
    try:
        await store.append_streams(
            [AppendRequest("account", name, created()) for name in ("a", "b")]
        )
        credit = moved("credited", "10.00", "10.00", "a1")
        await store.append("account", "a", [credit], 2)
        release = await hold_first_batch(store, store.append("account", "z", created()))
        retry = asyncio.ensure_future(store.append("account", "a", [credit], 2))
        other = asyncio.ensure_future(
            store.append("account", "b", [moved("credited", "4.00", "4.00", "b1")], 2)
        )
        await asyncio.sleep(0)
        release.set()
        await release.task  # type: ignore[attr-defined]
        (again,), _ = await asyncio.gather(retry, other)
        assert again.event_id == credit.event_id
        a, b = await account(db, "a"), await account(db, "b")
        assert a is not None and a["stats"]["transactionCount"] == 1
        assert a["balance"] == Decimal("10.00")
        assert b is not None and b["balance"] == Decimal("4.00")
    finally:
        await daemon.stop()
    assert (await read_models(db))["accounts_read"] == fold(await all_events(store))[
        "accounts_read"
    ]


class Picky(AccountsReadModel):
    """accounts_read, but a credit with reason "poison" breaks its handler."""

    def moved(self, event: RecordedEvent) -> Any:
        if event.data.get("reason") == "poison":
            raise ValueError("poisoned credit")
        return super().moved(event)


async def test_a_failing_handler_fails_its_append_alone_with_nothing_written(db: Db) -> None:
    store, daemon, _ = await inline_store(db, Picky())
    try:
        await store.append_streams(
            [AppendRequest("account", name, created()) for name in ("a", "b")]
        )
        head = await store.head_sequence()
        # Alone: refused, nothing written.
        with pytest.raises(InlineHandlerFailed, match="poisoned credit") as failed:
            await store.append(
                "account", "a", [moved("credited", "1.00", "1.00", "p0", reason="poison")], 2
            )
        assert failed.value.projection == "accounts_read"
        assert await store.head_sequence() == head
        # In a batch: only the poisoned append fails; the other commits and is applied.
        release = await hold_first_batch(store, store.append("account", "z", created()))
        bad = asyncio.ensure_future(
            store.append(
                "account", "a", [moved("credited", "1.00", "1.00", "p1", reason="poison")], 2
            )
        )
        good = asyncio.ensure_future(
            store.append("account", "b", [moved("credited", "2.00", "2.00", "g1")], 2)
        )
        await asyncio.sleep(0)
        release.set()
        await release.task  # type: ignore[attr-defined]
        with pytest.raises(InlineHandlerFailed):
            await bad
        await good
        events = await all_events(store)
        assert [e.data["transactionId"] for e in events if e.event_type == "account.credited"] == [
            "g1"
        ]
        a, b = await account(db, "a"), await account(db, "b")
        assert a is not None and a["balance"] == Decimal("0.00") and a["lastEventVersion"] == 2
        assert b is not None and b["balance"] == Decimal("2.00")
        assert await db["dead_letters"].count_documents({}) == 0
        assert daemon.runner("accounts_read").state == RunnerState.INLINE
    finally:
        await daemon.stop()


async def test_a_write_the_server_refuses_splits_the_batch(db: Db) -> None:
    from esmongo.projections import Insert, handles

    class Receipts(Projection):
        name = "receipts"
        collections = {"receipts": []}

        @handles("account.credited")
        def credited(self, event: RecordedEvent) -> Insert:
            return Insert("receipts", {"_id": event.data["transactionId"]})

    store, daemon, _ = await inline_store(db, Receipts())
    try:
        await store.append_streams(
            [AppendRequest("account", name, created()) for name in ("a", "b")]
        )
        release = await hold_first_batch(store, store.append("account", "z", created()))
        first = asyncio.ensure_future(
            store.append("account", "a", [moved("credited", "1.00", "1.00", "same")], 2)
        )
        second = asyncio.ensure_future(
            store.append("account", "b", [moved("credited", "1.00", "1.00", "same")], 2)
        )
        await asyncio.sleep(0)
        release.set()
        await release.task  # type: ignore[attr-defined]
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(outcomes[1], InlineWriteFailed), outcomes
        assert "duplicate key" in str(outcomes[1])
        assert isinstance(outcomes[0], list)
        assert await db["receipts"].count_documents({}) == 1
        assert [
            e.aggregate_id for e in await all_events(store) if e.event_type == "account.credited"
        ] == ["a"]
    finally:
        await daemon.stop()


async def test_the_hand_over_loses_a_race_with_an_append_and_tries_again(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    await store.append("account", "a", created())
    (projection,) = inline(AccountsReadModel())
    register_inline(store, [projection])
    raced: list[int] = []

    async def append_meanwhile() -> None:
        if not raced:  # the runner is at the head and about to hand over: an append lands
            recorded = await store.append(
                "account", "a", [moved("credited", "8.00", "8.00", "race")], 2
            )
            raced.append(recorded[0].sequence)

    inline_module.PAUSE_POINTS["hand_over"] = append_meanwhile
    daemon = ProjectionDaemon(store, [projection], OPTIONS)
    daemon.start()
    try:
        runner = daemon.runner("accounts_read")
        await until(lambda: runner.state == RunnerState.INLINE)
        # The raced credit was not applied inline (not inline yet when it committed), so the
        # hand-over failed, the runner applied it, then handed over after it.
        state = await store.inline.state("accounts_read")
        assert state.inline and state.since == raced[0]
        a = await account(db, "a")
        assert a is not None and a["balance"] == Decimal("8.00")
        assert a["stats"]["transactionCount"] == 1
        await store.append("account", "a", [moved("credited", "1.00", "9.00", "next")], 3)
        a = await account(db, "a")
        assert a is not None and a["balance"] == Decimal("9.00")
        assert a["stats"]["transactionCount"] == 2
    finally:
        await daemon.stop()


async def test_rebuild_takes_it_back_catches_up_and_hands_it_over_again(db: Db) -> None:
    store, daemon, (projection,) = await inline_store(db)
    load = BankLoad(store, seed=5)
    await load.append(300)
    appended_while_async: list[int] = []

    async def append_while_taken_back() -> None:
        # The rebuild switched it back to async: these go to the async runner / the build.
        appended_while_async.append(await load.append(20))

    inline_module.PAUSE_POINTS["taken_back"] = append_while_taken_back
    try:
        result = await rebuild(store, projection, batch_size=100, lease_ttl_s=2)
        assert appended_while_async and result.generation == 1
        runner = daemon.runner("accounts_read")
        await until(lambda: runner.state == RunnerState.INLINE)
        await load.append(30)  # inline again: seen at once
        expected = fold(await all_events(store))["accounts_read"]
        assert (await read_models(db))["accounts_read"] == expected
        checkpoint = await Checkpoints(db).get("accounts_read")
        assert checkpoint is not None and checkpoint.inline and checkpoint.generation == 1
        assert await Checkpoints(db).position("accounts_read") == await store.head_sequence()
    finally:
        await daemon.stop()


async def test_replay_of_an_inline_projection(db: Db) -> None:
    store, daemon, (projection,) = await inline_store(db)
    load = BankLoad(store, seed=9)
    await load.append(100)
    try:
        await daemon.stop()
        await replay(store, projection, batch_size=50)
        assert not (await store.inline.state("accounts_read")).inline
        await load.append(10)  # async now: not applied until a runner hands it over
        daemon.start()
        await until(lambda: daemon.runner("accounts_read").state == RunnerState.INLINE)
        expected = fold(await all_events(store))["accounts_read"]
        assert (await read_models(db))["accounts_read"] == expected
    finally:
        await daemon.stop()


async def test_a_process_that_does_not_apply_it_switches_it_off_and_the_runner_catches_up(
    db: Db,
) -> None:
    store, daemon, _ = await inline_store(db)
    try:
        await store.append("account", "a", created())
        other = EventStore(db)  # another process's store, accounts_read not registered
        recorded = await other.append(
            "account", "a", [moved("credited", "6.00", "6.00", "elsewhere")], 2
        )
        state = await store.inline.state("accounts_read")
        assert not state.inline and state.off_at == recorded[0].sequence - 1
        runner = daemon.runner("accounts_read")
        await until(
            lambda: runner.state == RunnerState.INLINE and runner.position >= recorded[0].sequence
        )
        a = await account(db, "a")
        assert a is not None and a["balance"] == Decimal("6.00")
        assert a["stats"]["transactionCount"] == 1
        # An event of no type it handles leaves it inline.
        await other.append("note", "n", [NewEvent("note.added", {})])
        assert (await store.inline.state("accounts_read")).inline
    finally:
        await daemon.stop()


async def test_the_bank_is_configured_by_name_or_environment(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = Bank(db, inline="accounts_read")
    lifecycles = {p.name: p.lifecycle for p in bank.projections}
    assert lifecycles == {
        "accounts_read": Lifecycle.INLINE,
        "transactions_read": Lifecycle.ASYNC,
        "analytics_hourly": Lifecycle.ASYNC,
    }
    assert bank.store.inline_registered == {"accounts_read"}
    monkeypatch.setenv("ESMONGO_INLINE_PROJECTIONS", " accounts_read , analytics_hourly")
    assert Bank(db).store.inline_registered == {"accounts_read", "analytics_hourly"}
    monkeypatch.delenv("ESMONGO_INLINE_PROJECTIONS")
    assert Bank(db).store.inline_registered == frozenset()
    with pytest.raises(ConfigurationError, match="no projection acounts_read"):
        Bank(db, inline="acounts_read")


async def test_the_service_with_accounts_read_inline_answers_consistent_reads_at_once(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api_helpers import api_client
    from esmongo.api.app import run_projection_daemon

    monkeypatch.setenv("ESMONGO_INLINE_PROJECTIONS", "accounts_read")
    async with api_client(db, background=run_projection_daemon) as api:
        bank = api.services.bank
        await until(lambda: _inline(bank.store))
        await api.open_account("a1", funds="10.00")
        # No projection daemon any more: only the commands' own transactions update it.
        assert api.services.projections is not None
        await api.services.projections.stop()
        api.services.consistency_timeout_s = 0.5
        for n in range(1, 4):
            r = await api.post("/accounts/a1/credit", json={"amount": "1.00"})
            assert r.status_code == 200, r.text
            plain = (await api.get("/accounts/a1")).json()
            consistent = await api.get("/accounts/a1", params={"consistent": "true"})
            assert consistent.status_code == 200, consistent.text
            for view in (plain, consistent.json()):
                assert Decimal(view["balance"]) == Decimal("10.00") + n
        other = (await api.get("/projections")).json()
        assert other  # the async read models are still listed
    monkeypatch.delenv("ESMONGO_INLINE_PROJECTIONS")


async def _inline(store: EventStore) -> bool:
    return (await store.inline.state("accounts_read")).inline


async def test_a_restore_leaves_no_projection_inline(db: Db, tmp_path: Any) -> None:
    """The read models are rebuilt after a restore, from sequence 0: a projection the
    counter still called inline would be applied twice (by the appends, then the runner)."""
    from esmongo.ops.backup import backup, restore

    store, daemon, _ = await inline_store(db)
    await store.append("account", "a", created())
    await daemon.stop()
    await backup(db, tmp_path)
    await db["events"].drop()
    await restore(db, tmp_path, drop_state=True, erasures=[])
    state = await EventStore(db).inline.state("accounts_read")
    assert not state.inline and state.off_at is None


async def test_handed_over_while_appends_keep_coming_each_event_is_applied_once(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    load = BankLoad(store, seed=11, synthetic_time=False)
    await load.append(300)
    (projection,) = inline(AccountsReadModel())
    register_inline(store, [projection])
    handed = asyncio.Event()

    async def keep_appending() -> None:  # until after the hand-over, about 200 events/s
        while not handed.is_set():
            await load.run(20, per_second=200, chunk=2)
        await load.run(40, per_second=200, chunk=2)

    writing = asyncio.create_task(keep_appending())
    daemon = ProjectionDaemon(store, [projection], OPTIONS)
    daemon.start()
    try:
        await until(lambda: daemon.runner("accounts_read").state == RunnerState.INLINE)
        handed.set()
        await writing
    finally:
        handed.set()
        await daemon.stop()
    expected = fold(await all_events(store))["accounts_read"]
    assert (await read_models(db))["accounts_read"] == expected


async def test_the_worker_refuses_an_unknown_inline_name(server_uri: str) -> None:
    from esmongo.projections import worker

    argv = ["--uri", server_uri, "--projections", "esmongo.bank.read_models:bank_projections"]
    with pytest.raises(SystemExit, match="no projection nope"):
        await worker.main([*argv, "--inline", "nope"])


async def test_an_inline_read_model_gets_personal_fields_in_clear(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events are stored with `ownerName` encrypted (esmongo.store.personal); the
    inline projection folds what the command raised, in clear, as an async one would."""
    from esmongo.bank import CreateAccount
    from esmongo.store.data_keys import MASTER_KEY_ENV, new_master_key
    from esmongo.store.personal import is_sealed

    monkeypatch.setenv(MASTER_KEY_ENV, new_master_key())
    bank = await Bank(db, inline="accounts_read").init()
    daemon = ProjectionDaemon(bank.store, bank.projections, OPTIONS)
    daemon.start()
    try:
        runner = daemon.runner("accounts_read")
        await until(lambda: runner.state == RunnerState.INLINE)
        assert (await bank.handle(CreateAccount("a1", "alice", "Alice Smith", "EUR"))).success
        stored = await bank.store.events.find_one({"aggregateId": "a1"})
        assert stored is not None and is_sealed(stored["data"]["ownerName"])
        doc = await account(db, "a1")
        assert doc is not None and doc["owner"]["name"] == "Alice Smith"
    finally:
        await daemon.stop()
        await bank.close()
