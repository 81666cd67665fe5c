"""After a migration switch: old writers are refused clearly, new ones use the new collection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount
from esmongo.errors import EventsCollectionSealed
from esmongo.ops.migration import Migrator


async def test_a_switch_moves_the_bank_to_the_new_collection(db: AsyncDatabase[Any]) -> None:
    old = await Bank(db).init()
    await old.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    await old.handle(ActivateAccount("a1"))
    await old.handle(CreditAccount("a1", Decimal("10.00"), "t1"))
    head = await old.store.head_sequence()

    migrator = Migrator(db, [])
    report = await migrator.run("events_v2")
    assert report.complete and report.copied == head
    await migrator.switch("events_v2")

    with pytest.raises(EventsCollectionSealed, match="Restart this process"):
        await old.accounts.save(await _credit(old, "t2"))

    new = await Bank(db).init()
    assert new.store.collection_name == "events_v2"
    result = await new.handle(CreditAccount("a1", Decimal("5.00"), "t2"))
    assert result.success and result.events[0].sequence == head + 1
    assert (await new.accounts.load("a1")).balance == Decimal("15.00")
    assert await db["events"].count_documents({}) == head  # the original, kept for audit


async def _credit(bank: Bank, txn: str) -> Any:
    account = await bank.accounts.load("a1")
    account.credit(Decimal("5.00"), txn)
    return account
