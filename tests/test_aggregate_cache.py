"""The repository's aggregate cache: private copies, bounded, fast-forwarded on load, and
correct when other processes write the same aggregates."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import Aggregate, ConcurrencyError, EventStore, Repository, applies
from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount, DebitAccount
from esmongo.codec import Document
from esmongo.model import AggregateCache, EventLike, SnapshotStore

WORKER = Path(__file__).parent / "bank_worker.py"


class Tally(Aggregate):
    aggregate_type = "tally"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.raise_event("tally.noted", {"text": text})

    @applies("tally.noted")
    def _noted(self, event: EventLike) -> None:
        self.notes.append(event.data["text"])


def tally(aggregate_id: str, *notes: str) -> Tally:
    t = Tally(aggregate_id)
    for n in notes:
        t.note(n)
    t.mark_committed()
    return t


def test_the_cache_hands_out_copies_and_keeps_none_with_unsaved_events() -> None:
    cache: AggregateCache[Tally] = AggregateCache()
    cache.put(tally("a", "x"))
    first = cache.get("a")
    assert first is not None
    first.note("y")  # the caller's change, never saved
    again = cache.get("a")
    assert again is not None and again.notes == ["x"] and again.version == 1
    with pytest.raises(ValueError, match="unsaved events"):
        cache.put(first)
    cache.put(tally("a"))  # older than what is kept: ignored
    assert cache.get("a").version == 1  # type: ignore[union-attr]


def test_the_cache_is_bounded_by_count_and_by_estimated_bytes() -> None:
    by_count: AggregateCache[Tally] = AggregateCache(max_count=2)
    for name in "abc":
        by_count.put(tally(name, "x"))
    assert len(by_count) == 2 and by_count.get("a") is None  # least recently used went
    one = tally("big", *["note"] * 100)
    small = AggregateCache[Tally](max_bytes=10**9)
    small.put(one)
    size = small.bytes
    assert size > 0
    by_bytes: AggregateCache[Tally] = AggregateCache(max_bytes=size * 2 + size // 2)
    for name in ("p", "q", "r"):
        by_bytes.put(tally(name, *["note"] * 100))
    assert len(by_bytes) == 2 and by_bytes.bytes <= by_bytes.max_bytes
    assert by_bytes.get("p") is None
    too_big: AggregateCache[Tally] = AggregateCache(max_bytes=size // 2)
    too_big.put(one)
    assert len(too_big) == 0 and too_big.bytes == 0
    with pytest.raises(ValueError, match="needs room"):
        AggregateCache(max_count=0)


async def test_a_cached_load_reads_only_newer_events_and_no_snapshot(
    counted: tuple[FindCounter, AsyncDatabase[Document]], db: AsyncDatabase[Document]
) -> None:
    listener, watched = counted
    store = EventStore(watched)
    await store.init()
    snapshots = SnapshotStore(watched)
    await snapshots.init()
    mine = Repository(store, Tally, snapshots=snapshots, cache=AggregateCache())
    other = Repository(EventStore(db), Tally)  # another process
    t = Tally("t")
    t.note("mine")
    await mine.save(t)
    listener.commands.clear()
    loaded = await mine.load("t")
    assert loaded.notes == ["mine"]
    assert listener.commands == ["find"]  # the events after version 1: none
    theirs = await other.load("t")
    theirs.note("theirs")
    await other.save(theirs)
    listener.commands.clear()
    assert (await mine.load("t")).notes == ["mine", "theirs"]  # fast-forwarded
    assert listener.commands == ["find"]
    assert (await mine.load("t")).version == 2


async def test_a_save_from_a_stale_copy_conflicts_and_the_retry_loads_the_news(
    db: AsyncDatabase[Document],
) -> None:
    """The copy kept is a true prefix of the stream: a save from it expects its version,
    so what another process wrote since is a conflict, never overwritten."""
    store = EventStore(db)
    await store.init()
    mine = Repository(store, Tally, cache=AggregateCache())
    other = Repository(EventStore(db), Tally)
    t = Tally("t")
    t.note("one")
    await mine.save(t)
    stale = await mine.load("t")
    theirs = await other.load("t")
    theirs.note("two")
    await other.save(theirs)
    stale.note("three")
    with pytest.raises(ConcurrencyError):
        await mine.save(stale)
    fresh = await mine.load("t")
    assert fresh.notes == ["one", "two"]
    fresh.note("three")
    await mine.save(fresh)
    assert (await other.load("t")).notes == ["one", "two", "three"]


# ---- two service processes on the same accounts -------------------------------------


class Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()

    async def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        assert line, "the worker stopped"
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, line: str) -> dict[str, Any]:
        await self.send(line)
        return await self.answer()


@pytest.fixture
async def workers(server_uri: str, db: AsyncDatabase[Document]) -> AsyncIterator[list[Worker]]:
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            server_uri,
            db.name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        yield [Worker(p) for p in started]
    finally:
        for p in started:
            if p.stdin is not None:
                p.stdin.close()
        for p in started:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
                await p.wait()


async def test_two_processes_with_caches_write_the_same_account_without_losing_a_movement(
    workers: list[Worker], db: AsyncDatabase[Document]
) -> None:
    one, two = workers
    assert (await one.ask("open a"))["ok"]
    assert (await one.ask("credit a 100"))["balance"] == "100.00"  # one keeps a at v3
    assert (await two.ask("debit a 30"))["balance"] == "70.00"
    # One's copy says 100 and decides on it: its save expects v3 and conflicts, then one
    # reads the debit and decides again, so 80 is refused, not overdrawn.
    refused = await one.ask("debit a 80")
    assert (refused["ok"], refused["error"]) == (False, "InsufficientFunds")
    assert refused["balance"] == "70.00"
    assert refused["conflicts"] == 1
    # A conflict: one decides on a load, two writes, then one saves.
    await one.send("hold")
    await one.send("debit a 50")
    assert (await one.answer())["held"]
    assert (await two.ask("credit a 5"))["balance"] == "75.00"
    await one.send("go")
    retried = await one.answer()
    assert retried["ok"] and retried["conflicts"] == 2  # counted since the worker started
    assert retried["balance"] == "25.00"
    assert (await two.ask("balance a"))["balance"] == "25.00"  # two's copy fast-forwards
    bank = await Bank(db, cache_aggregates=0).init()
    account = await bank.accounts.load("a")
    assert (account.balance, account.version) == (Decimal("25.00"), 6)


async def test_bank_commands_fast_forward_the_cached_account(db: AsyncDatabase[Document]) -> None:
    """In one process, two banks stand for two services: each one's cache is fast-forwarded
    by its next command, so the balance it decides on is the stored one."""
    left, right = await Bank(db).init(), await Bank(db).init()
    assert (await left.handle(CreateAccount("a", "u", "U", "EUR"))).success
    assert (await right.handle(ActivateAccount("a"))).success
    for i in range(6):
        bank = left if i % 2 else right
        assert (await bank.handle(CreditAccount("a", Decimal("1.00")))).success
    for bank in (left, right):
        account = await bank.accounts.load("a")
        assert (account.balance, account.version) == (Decimal("6.00"), 8)


async def test_a_command_on_an_account_this_process_wrote_last_reads_nothing(
    counted: tuple[FindCounter, AsyncDatabase[Document]],
) -> None:
    """The kept copy decides, the save's expected version guards it: one transaction."""
    listener, watched = counted
    bank = await Bank(watched).init()
    assert (await bank.handle(CreateAccount("a", "u", "U", "EUR"))).success
    assert (await bank.handle(ActivateAccount("a"))).success
    listener.commands.clear()
    for _ in range(3):
        assert (await bank.handle(CreditAccount("a", Decimal("1.00")))).success
    assert listener.commands == []
    assert (await bank.accounts.load("a")).balance == Decimal("3.00")


async def test_a_refusal_decided_on_a_kept_copy_is_decided_again_on_what_is_stored(
    db: AsyncDatabase[Document],
) -> None:
    """Left's copy says 0.00; right credited since. A refusal is not guarded by a save, so
    left reads before it refuses: the debit goes through."""
    left, right = await Bank(db).init(), await Bank(db).init()
    assert (await left.handle(CreateAccount("a", "u", "U", "EUR"))).success
    assert (await left.handle(ActivateAccount("a"))).success
    assert (await right.handle(CreditAccount("a", Decimal("100.00")))).success
    debited = await left.handle(DebitAccount("a", Decimal("50.00")))
    assert debited.success, debited.error
    assert (await right.accounts.load("a")).balance == Decimal("50.00")
    refused = await left.handle(DebitAccount("a", Decimal("80.00")))
    assert type(refused.error).__name__ == "InsufficientFunds"


async def test_a_conflict_on_a_kept_copy_leaves_it_doubted_until_a_load_reads_it(
    db: AsyncDatabase[Document],
) -> None:
    store = EventStore(db)
    await store.init()
    cache: AggregateCache[Tally] = AggregateCache()
    mine = Repository(store, Tally, cache=cache)
    other = Repository(EventStore(db), Tally)
    t = Tally("t")
    t.note("one")
    await mine.save(t)
    theirs = await other.load("t")
    theirs.note("two")
    await other.save(theirs)
    stale = await mine.load("t", optimistic=True)  # trusted, unread: one note
    assert stale.notes == ["one"]
    stale.note("three")
    with pytest.raises(ConcurrencyError):
        await mine.save(stale)
    assert cache.trusted("t") is None  # doubted: the next optimistic load reads
    fresh = await mine.load("t", optimistic=True)
    assert fresh.notes == ["one", "two"]
    assert cache.trusted("t") is not None


async def test_an_aggregate_pickle_refuses_is_not_kept_and_loads_read_the_store(
    db: AsyncDatabase[Document], caplog: pytest.LogCaptureFixture
) -> None:
    class Local(Tally):  # a class defined in a function: pickle cannot name it
        aggregate_type = "local"

    store = EventStore(db)
    await store.init()
    cache: AggregateCache[Local] = AggregateCache()
    repository = Repository(store, Local, cache=cache)
    t = Local("l")
    t.note("one")
    with caplog.at_level("WARNING", logger="esmongo.model.cache"):
        await repository.save(t)
        again = Local("m")
        again.note("x")
        await repository.save(again)
    assert len(cache) == 0 and cache.bytes == 0
    assert [r.getMessage().count("cannot be pickled") for r in caplog.records] == [1]  # once
    loaded = await repository.load("l", optimistic=True)
    assert loaded.notes == ["one"] and loaded.version == 1
