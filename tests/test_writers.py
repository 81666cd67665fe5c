"""A writer that dies inside an append does not stall the others (esmongo.store.writers).

The dead process's transaction holds the sequence counter until the server's transaction
lifetime ends (60 s on MongoDB): the writers that are left find its registration stale
and kill its sessions instead of waiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

import esmongo.store.batch_writer
import esmongo.store.transactions
from esmongo import EventStore, NewEvent
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.store.writers import Liveness

CHILD = Path(__file__).parent / "dying_writer.py"
FAST = Liveness(heartbeat_s=0.2, stale_after_s=1.0, conflict_after_s=0.2)
LIFETIME_S = 60.0
"""MongoDB's default transactionLifetimeLimitSeconds: what a stalled writer would wait."""


def placed(n: int) -> list[NewEvent]:
    return [NewEvent("order.placed", {"n": n})]


async def hold_the_counter_and_die(uri: str, db_name: str, mode: str = "append") -> None:
    """Run a writer process until its append's (or archive's) transaction holds the
    counter; kill -9 it."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), uri, db_name, mode, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"holding", line
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()


async def test_a_writer_killed_inside_an_append_does_not_stall_the_next(
    server_uri: str, db: AsyncDatabase[Document]
) -> None:
    store = EventStore(db, liveness=FAST)
    await store.init()
    await hold_the_counter_and_die(server_uri, db.name)
    corpse = await db["esmongo_writers"].find_one({})
    assert corpse is not None and corpse["sessions"]  # it registered before it wrote

    started = time.monotonic()
    recorded = await asyncio.wait_for(store.append("order", "o1", placed(1)), LIFETIME_S / 4)
    took = time.monotonic() - started

    assert took < 10, f"the append waited {took:.1f} s for the dead writer"
    assert store.stats.retries > 0  # it did meet the dead writer's transaction
    assert store.writers.killed == len(corpse["sessions"])
    assert await db["esmongo_writers"].find_one({"_id": corpse["_id"]}) is None
    # The dead append left nothing: the sequence goes on from where it was, gap-free.
    assert recorded[0].sequence == 1 and await store.head_sequence() == 1
    assert [e.aggregate_id async for e in store.read_all()] == ["o1"]


async def test_an_archiver_killed_inside_its_transaction_does_not_stall_appends(
    server_uri: str, db: AsyncDatabase[Document]
) -> None:
    """An archive holds the counter as an append does: its session is a writer's too."""
    store = EventStore(db, liveness=FAST)
    await store.init()
    await store.append("order", "closed", placed(0))
    await hold_the_counter_and_die(server_uri, db.name, "archive")
    corpse = await db["esmongo_writers"].find_one({"pid": {"$ne": os.getpid()}})
    assert corpse is not None and corpse["sessions"]  # the archiver registered its session

    started = time.monotonic()
    recorded = await asyncio.wait_for(store.append("order", "o1", placed(1)), LIFETIME_S / 4)
    took = time.monotonic() - started

    assert took < 10, f"the append waited {took:.1f} s for the dead archiver"
    assert store.writers.killed >= 1
    assert recorded[0].sequence == 2  # the dead archive moved nothing and took no number
    assert await store.archived("order", "closed") is None
    assert [e.aggregate_id async for e in store.read_all()] == ["closed", "o1"]


async def test_a_new_store_sweeps_dead_writers_at_init(
    server_uri: str, db: AsyncDatabase[Document]
) -> None:
    await EventStore(db).init()
    await hold_the_counter_and_die(server_uri, db.name)
    store = EventStore(db, liveness=FAST)
    deadline = time.monotonic() + 10
    await store.init()
    while await db["esmongo_writers"].count_documents({}):  # until its heartbeat is stale
        assert time.monotonic() < deadline, "the dead writer was never swept"
        await asyncio.sleep(0.1)
        await store.init()
    assert store.writers.killed >= 1
    await asyncio.wait_for(store.append("order", "o1", placed(1)), 2)  # no conflict left
    assert store.stats.retries == 0


async def test_a_live_writer_is_not_taken_for_dead(db: AsyncDatabase[Document]) -> None:
    alive, other = EventStore(db, liveness=FAST), EventStore(db, liveness=FAST)
    await alive.init()
    await alive.append("order", "o1", placed(1))
    await asyncio.sleep(FAST.stale_after_s * 2)  # several heartbeats: it stays fresh
    assert await other.writers.sweep() == 0
    assert other.writers.killed == 0
    assert await db["esmongo_writers"].count_documents({}) == 1
    await alive.append("order", "o1", placed(2))
    await alive.writers.close()
    assert await db["esmongo_writers"].count_documents({}) == 0


async def test_a_writer_taken_for_dead_loses_its_transaction_not_its_append(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live writer that stops beating (a stalled process) has its transaction killed:
    its append is retried and recorded once, after the other writer's."""
    slow = EventStore(db, liveness=Liveness(heartbeat_s=60, stale_after_s=300))
    other = EventStore(db, liveness=Liveness(heartbeat_s=0.1, stale_after_s=0.5))
    await slow.init()
    holding, resume = asyncio.Event(), asyncio.Event()
    bump = esmongo.store.transactions.bump_counter

    async def hold_once(*args: Any, **kwargs: Any) -> Document:
        counter = await bump(*args, **kwargs)
        if not holding.is_set():
            holding.set()
            await resume.wait()
        return counter

    monkeypatch.setattr(esmongo.store.batch_writer, "bump_counter", hold_once)
    stalled = asyncio.create_task(slow.append("order", "slow", placed(1)))
    await holding.wait()
    recorded = await asyncio.wait_for(other.append("order", "fast", placed(2)), 10)
    assert other.writers.killed == 1
    resume.set()
    (late,) = await asyncio.wait_for(stalled, 10)
    assert (recorded[0].sequence, late.sequence) == (1, 2)
    assert slow.stats.retries >= 1
    events = [(e.aggregate_id, e.sequence) async for e in slow.read_all()]
    assert events == [("fast", 1), ("slow", 2)]


class UpdateCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.updates: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.updates.append(str(event.command.get("update")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def listened(
    server_uri: str, db: AsyncDatabase[Document]
) -> AsyncIterator[tuple[UpdateCounter, AsyncDatabase[Document]]]:
    listener = UpdateCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(server_uri, event_listeners=[listener])
    try:
        yield listener, client.get_database(db.name, codec_options=CODEC_OPTIONS)
    finally:
        await client.close()


async def test_sessions_are_registered_once_not_per_append(
    listened: tuple[UpdateCounter, AsyncDatabase[Document]],
) -> None:
    listener, db = listened
    store = EventStore(db, liveness=Liveness(heartbeat_s=60, stale_after_s=300))
    await store.init()
    for n in range(20):
        await store.append("order", f"o{n}", placed(n))
    assert listener.updates.count("esmongo_writers") == 1  # the pooled session, once
    registration = await db["esmongo_writers"].find_one({})
    assert registration is not None and len(registration["sessions"]) == 1
    await store.writers.close()


async def test_an_idle_writer_withdraws_and_registers_again(db: AsyncDatabase[Document]) -> None:
    liveness = Liveness(heartbeat_s=0.05, stale_after_s=1.0, idle_after_s=0.2)
    store = EventStore(db, liveness=liveness)
    await store.init()
    await store.append("order", "o1", placed(1))
    first = await db["esmongo_writers"].find_one({})
    assert first is not None
    deadline = time.monotonic() + 10
    while await db["esmongo_writers"].count_documents({}):
        assert time.monotonic() < deadline, "the idle writer kept its registration"
        await asyncio.sleep(0.05)
    await store.append("order", "o1", placed(2))
    again = await db["esmongo_writers"].find_one({})
    assert again is not None and again["_id"] != first["_id"] and again["sessions"]
    await store.writers.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"heartbeat_s": 0}, "heartbeat_s must be > 0"),
        ({"heartbeat_s": 1, "stale_after_s": 2}, "must exceed two heartbeats"),
    ],
)
def test_liveness_is_checked(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Liveness(**fields)


async def test_closing_the_application_withdraws_its_writer_registration(
    db: AsyncDatabase[Document],
) -> None:
    """A clean shutdown leaves no registration behind for others to take for dead, and no
    heartbeat running against a database the process is done with."""
    from esmongo.bank import ActivateAccount, Bank, CreateAccount

    bank = await Bank(db).init()
    assert (await bank.handle(CreateAccount("w1", "u1", "Ann", "EUR"))).success
    assert (await bank.handle(ActivateAccount("w1"))).success
    assert await db["esmongo_writers"].count_documents({}) == 1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("writer:")]
    await bank.close()
    assert await db["esmongo_writers"].count_documents({}) == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("writer:")]
