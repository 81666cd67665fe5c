"""Nothing acknowledged is lost around a migration switch, a rollback or an archive.

Each race is made deterministic by pausing one step of a real operation: an append's or
an archive's commit (held until the switch has met it), or a rollback between its check
and what follows. Issue 10, items 1 to 4.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import api_client
from esmongo import EventStore, NewEvent
from esmongo.codec import Document
from esmongo.errors import EventsCollectionSealed
from esmongo.ops.migration import Migrator, active_events_collection, rollback_switch
from esmongo.ops.migration import switch as switch_module
from esmongo.store import batch_writer, fence, transactions
from test_migration import MIGRATIONS, seed


class HeldCommit:
    """Holds the next commit of a module's transactions until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()
        original: Callable[[Any], Awaitable[None]] = module.commit

        async def held(session: Any) -> None:
            if not self.go.is_set():
                self.reached.set()
                await self.go.wait()
            await original(session)

        monkeypatch.setattr(module, "commit", held)


def conflicts_seen(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when a fence transaction (esmongo.store.transactions.run_in_transaction) backs off."""
    seen = asyncio.Event()
    original = transactions.backoff

    def noted(attempt: int, typical: float) -> float:
        seen.set()
        return original(attempt, typical)

    monkeypatch.setattr(transactions, "backoff", noted)
    return seen


async def first_of(task: asyncio.Task[Any], event: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


async def sequences(db: AsyncDatabase[Document], name: str) -> list[int]:
    return [d["sequence"] async for d in db[name].find({}, {"sequence": 1}, sort=[("sequence", 1)])]


async def test_an_append_in_flight_during_a_switch_is_in_the_new_log(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: the append inserted before the switch and commits after its verification."""
    store = await seed(db, streams=3, rounds=3)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    hold = HeldCommit(monkeypatch, batch_writer)
    conflicted = conflicts_seen(monkeypatch)
    append = asyncio.create_task(
        store.append("account", "a000", [NewEvent("account.debited", {"n": 1})])
    )
    await hold.reached.wait()  # inserted, counter taken, not committed
    switch = asyncio.create_task(migrator.switch("events_v3"))
    await first_of(switch, conflicted)  # the switch met the append (or, unfenced, finished)
    hold.go.set()
    recorded = await append
    await switch
    assert await active_events_collection(db) == "events_v3"
    active = await sequences(db, "events_v3")
    assert recorded[0].sequence in active, "an acknowledged event is missing from the new log"
    assert active == list(range(1, len(active) + 1))


async def test_a_rollback_never_drops_an_append_that_commits_meanwhile(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: an append commits between the rollback's comparison of the heads and the seal."""
    await seed(db, streams=3, rounds=3)
    await Migrator(db, MIGRATIONS).switch("events_v3")
    writer = EventStore(db, collection="events_v3")
    original = switch_module.max_sequence
    calls = 0
    outcome: dict[str, Any] = {}

    async def then_append(collection: Any, log_head: int | None = None) -> int:
        nonlocal calls
        head = await original(collection, log_head)
        calls += 1
        if calls == 2:  # both heads read: an append arrives now
            try:
                outcome["recorded"] = await writer.append(
                    "account", "a001", [NewEvent("account.debited", {"n": 2})]
                )
            except EventsCollectionSealed as exc:
                outcome["refused"] = exc
        return head

    monkeypatch.setattr(switch_module, "max_sequence", then_append)
    try:
        active = await rollback_switch(db)
    except switch_module.MigrationError:
        active = await active_events_collection(db)
    assert outcome, "the append did not run"
    if "recorded" in outcome:
        assert outcome["recorded"][0].sequence in await sequences(db, active), (
            "an acknowledged append is not in the active collection after the rollback"
        )
    else:
        assert active == "events"  # refused while the rollback held the fence: nothing lost
    assert await active_events_collection(db) == active
    after = await EventStore(db, collection=active).append(
        "account", "a002", [NewEvent("account.debited", {})]
    )
    assert after[0].sequence == len(await sequences(db, active))


async def test_archiving_during_a_switch_leaves_the_stream_in_one_place(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: an archive that commits after the switch copied its stream."""
    store = await seed(db, streams=3, rounds=3)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    hold = HeldCommit(monkeypatch, transactions)  # archives commit through run_in_transaction
    conflicted = conflicts_seen(monkeypatch)
    archiving = asyncio.create_task(store.archive_stream("account", "a001"))
    await hold.reached.wait()
    switch = asyncio.create_task(migrator.switch("events_v3"))
    await first_of(switch, conflicted)
    hold.go.set()
    await archiving
    await switch
    where = {"aggregateType": "account", "aggregateId": "a001"}
    in_active = await db["events_v3"].count_documents(where)
    in_archive = await db["events_archive"].count_documents(where)
    assert (in_active, in_archive) == (0, 3), "the stream is in the new log and the archive"


async def test_an_archive_is_refused_while_a_switch_holds_the_fence(
    db: AsyncDatabase[Document],
) -> None:
    store = await seed(db, streams=2, rounds=2)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    refused: list[BaseException] = []

    async def archive_now() -> None:
        try:
            await store.archive_stream("account", "a001")
        except EventsCollectionSealed as exc:
            refused.append(exc)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setitem(switch_module.PAUSE_POINTS, "switch:fenced", archive_now)
    try:
        await migrator.switch("events_v3")
    finally:
        monkeypatch.undo()
    assert refused and "paused" in str(refused[0])
    assert await db["events_archive"].count_documents({}) == 0


async def test_verify_passes_while_writes_continue_and_the_switch_checks_the_tail(
    db: AsyncDatabase[Document],
) -> None:
    """Item 4: a full verification up to what was copied, the tail under the fence."""
    store = await seed(db, streams=4, rounds=3)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    for i in range(3):  # the application keeps appending after the copy
        await store.append("account", f"a00{i}", [NewEvent("account.debited", {"n": i})])
    report = await migrator.verify("events_v3")
    assert report.ok, report.problems
    assert report.source_count == 12
    await store.append("account", "a003", [NewEvent("account.debited", {})])
    switched = await migrator.switch("events_v3", tail_only=True)
    assert switched.ok and switched.verified_from == 13 and switched.source_count == 4
    assert await sequences(db, "events_v3") == list(range(1, 17))


async def test_a_switch_that_fails_reopens_writes_on_the_source(
    db: AsyncDatabase[Document],
) -> None:
    store = await seed(db, streams=2, rounds=2)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    await db["events_v3"].delete_one({"sequence": 2})
    with pytest.raises(switch_module.MigrationError):
        await migrator.switch("events_v3")
    await store.append("account", "a000", [NewEvent("account.debited", {})])  # writable again
    assert await active_events_collection(db) == "events"


async def test_the_api_answers_503_while_writes_are_paused(db: AsyncDatabase[Document]) -> None:
    """A held fence was a 500; it is a 503 that says writes are paused (nothing written)."""
    async with api_client(db) as api:
        body = {"accountId": "acc_1", "ownerId": "o", "ownerName": "O", "currency": "EUR"}
        assert (await api.post("/accounts", json=body)).status_code == 201
        await fence.close(db, "events", "migration switch to events_v9")
        credit = await api.post("/accounts/acc_1/activate", headers={"Idempotency-Key": "k1"})
        assert credit.status_code == 503, credit.text
        assert credit.json()["error"]["code"] == "events_collection_sealed"
        assert "paused" in credit.json()["error"]["message"]
        await fence.open_on(db, "events", "migration switch to events_v9")
        again = await api.post("/accounts/acc_1/activate", headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200, again.text


async def test_a_store_that_names_its_collection_opens_a_fresh_database_on_it(
    db: AsyncDatabase[Document],
) -> None:
    """A fresh database takes the first store's own collection name; one with events keeps
    its log, and a store that names another collection is refused, as after a switch."""
    ledger = EventStore(db, collection="ledger_events")
    await ledger.init()
    (event,) = await ledger.append("t", "x", [NewEvent("t.happened", {})])
    assert await active_events_collection(db) == "ledger_events"
    await EventStore(db, collection="ledger_events").init()  # again: nothing changes
    default = EventStore(db)
    await default.init()
    with pytest.raises(EventsCollectionSealed, match="ledger_events"):
        await default.append("t", "y", [NewEvent("t.happened", {})])
    assert [e async for e in ledger.read_all()] == [event]


async def test_a_named_collection_does_not_take_over_a_database_with_events(
    db: AsyncDatabase[Document],
) -> None:
    default = EventStore(db)
    await default.init()
    await default.append("t", "x", [NewEvent("t.happened", {})])
    other = EventStore(db, collection="ledger_events")
    await other.init()
    assert await active_events_collection(db) == "events"
    with pytest.raises(EventsCollectionSealed, match="ledger_events"):
        await other.append("t", "y", [NewEvent("t.happened", {})])
    assert await default.head_sequence() == 1
