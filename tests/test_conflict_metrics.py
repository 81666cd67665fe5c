"""Conflicts and retries are exported as metrics (issue 10, item 22): command conflicts
retried (by command), store transaction retries, appends taken out of a batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import InsertOne
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import ConcurrencyError, EventStore, NewEvent
from esmongo.bank import Account, ActivateAccount, Bank, CreateAccount, CreditAccount
from esmongo.codec import Document
from esmongo.store.transactions import SEQUENCE_COUNTER, begin
from esmongo.store.unit_of_work import DocumentWrite


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def bank(db: AsyncDatabase[Document]) -> Bank:
    bank = await Bank(db).init()
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    await bank.handle(ActivateAccount("a1"))
    return bank


def interfere(bank: Bank, times: int) -> None:
    """After each of the next `times` loads of a1, another writer credits it: the command's
    save then conflicts, deterministically."""
    load = bank.accounts.load
    left = [times]

    async def load_then_interfere(account_id: str, **options: Any) -> Account:
        account = await load(account_id, **options)
        if left[0] > 0:
            left[0] -= 1
            other = await load(account_id)
            other.credit("1.00", f"other-{left[0]}")
            await bank.accounts.save(other)
        return account

    bank.accounts.load = load_then_interfere  # type: ignore[method-assign]


async def test_command_conflicts_retried_are_counted_by_command(bank: Bank) -> None:
    before = sample("esmongo_commands_conflicts_retried_total", command="CreditAccount")
    interfere(bank, times=2)
    result = await bank.handle(CreditAccount("a1", "5.00", "t1"))
    assert result.success, result.error
    after = sample("esmongo_commands_conflicts_retried_total", command="CreditAccount")
    assert after - before == 2
    assert (await bank.accounts.load("a1")).balance == 7


async def test_a_command_that_keeps_conflicting_is_counted_as_exhausted(bank: Bank) -> None:
    bank.handler.max_attempts = 2
    retried = sample("esmongo_commands_conflicts_retried_total", command="CreditAccount")
    exhausted = sample("esmongo_commands_conflicts_exhausted_total", command="CreditAccount")
    interfere(bank, times=5)
    result = await bank.handle(CreditAccount("a1", "5.00", "t1"))
    assert isinstance(result.error, ConcurrencyError)
    assert sample("esmongo_commands_conflicts_retried_total", command="CreditAccount") == (
        retried + 1
    )
    assert sample("esmongo_commands_conflicts_exhausted_total", command="CreditAccount") == (
        exhausted + 1
    )


async def test_store_transaction_retries_are_counted(db: AsyncDatabase[Document]) -> None:
    """A transaction of another writer holds the counter: the append conflicts and retries
    until it commits."""
    store = EventStore(db)
    await store.init()
    before = sample("esmongo_store_transaction_retries_total")
    async with db.client.start_session() as session:
        await begin(session)
        await db["counters"].update_one(
            {"_id": SEQUENCE_COUNTER}, {"$inc": {"testHold": 1}}, session=session
        )
        append = asyncio.create_task(store.append("s", "1", [NewEvent("e.happened", {})]))
        deadline = time.monotonic() + 30
        while sample("esmongo_store_transaction_retries_total") == before:
            assert time.monotonic() < deadline, "the append never conflicted"
            assert not append.done(), "the append committed through a held counter"
            await asyncio.sleep(0.01)
        await session.commit_transaction()
    (recorded,) = await append
    assert recorded.sequence == 1
    assert sample("esmongo_store_transaction_retries_total") > before


async def test_appends_taken_out_of_a_batch_are_counted(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db)
    await store.init()
    await db["records"].insert_one({"_id": "taken"})
    before = sample("esmongo_store_appends_taken_out_total")
    clash = [DocumentWrite("records", InsertOne({"_id": "taken"}))]
    fine = [DocumentWrite("records", InsertOne({"_id": "free"}))]
    results: list[Any] = await asyncio.gather(
        store.append("s", "1", [NewEvent("e.happened", {})], writes=clash),
        store.append("s", "2", [NewEvent("e.happened", {})], writes=fine),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    assert sample("esmongo_store_appends_taken_out_total") == before + 1
    assert await store.head_sequence() == 1


async def test_transactions_and_the_appends_they_carry_are_counted(
    db: AsyncDatabase[Document],
) -> None:
    """Their ratio is the group-commit batch size: eight concurrent appends, one batch."""
    store = EventStore(db)
    await store.init()
    transactions = sample("esmongo_store_transactions_total")
    appends = sample("esmongo_store_appends_total")
    await store.append("s", "0", [NewEvent("e.happened", {})])
    assert sample("esmongo_store_transactions_total") == transactions + 1
    assert sample("esmongo_store_appends_total") == appends + 1
    await asyncio.gather(
        *[
            store.append("s", str(n), [NewEvent("e.happened", {}), NewEvent("e.happened", {})])
            for n in range(1, 9)
        ]
    )
    assert store.stats.transactions == 2
    assert sample("esmongo_store_transactions_total") == transactions + 2
    assert sample("esmongo_store_appends_total") == appends + 9
