"""`writes=` through Bank.handle / Repository.save (issue 10 item 5, the library side): the
documents commit with the command's events, or not at all."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pymongo import InsertOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from esmongo import RecordedEvent
from esmongo.bank import (
    ActivateAccount,
    Bank,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    TransferFunds,
)
from esmongo.codec import Document
from esmongo.store.unit_of_work import DocumentWrite, Writes


@pytest.fixture
async def bank(db: AsyncDatabase[Document]) -> Bank:
    bank = await Bank(db).init()
    for account in ("a1", "a2"):
        await bank.handle(CreateAccount(account, "u1", "Ann", "EUR"))
        await bank.handle(ActivateAccount(account))
    await bank.handle(CreditAccount("a1", "10.00", "seed"))
    return bank


def receipt(name: str) -> Writes:
    def writes(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
        sequences = [e.sequence for stream in recorded for e in stream]
        return [DocumentWrite("receipts", InsertOne({"_id": name, "sequences": sequences}))]

    return writes


async def test_writes_commit_with_the_events(bank: Bank, db: AsyncDatabase[Document]) -> None:
    result = await bank.handle(CreditAccount("a1", "5.00", "t1"), writes=receipt("r1"))
    assert result.success
    doc = await db["receipts"].find_one({"_id": "r1"})
    assert doc is not None and doc["sequences"] == [result.last_sequence]
    transfer = TransferFunds("a1", "a2", "1.00", "trf-1")
    moved = await bank.handle(transfer, writes=receipt("r2"))
    doc = await db["receipts"].find_one({"_id": "r2"})
    assert doc is not None and sorted(doc["sequences"]) == sorted(e.sequence for e in moved.events)


async def test_a_refused_command_writes_nothing(bank: Bank, db: AsyncDatabase[Document]) -> None:
    result = await bank.handle(DebitAccount("a1", "99.00", "t1"), writes=receipt("r1"))
    assert result.error is not None and result.error.code == "insufficient_funds"
    assert await db["receipts"].count_documents({}) == 0


async def test_a_failing_write_fails_the_command_with_nothing_written(
    bank: Bank, db: AsyncDatabase[Document]
) -> None:
    await db["receipts"].insert_one({"_id": "taken"})
    head = await bank.store.head_sequence()
    with pytest.raises(PyMongoError):
        await bank.handle(CreditAccount("a1", "5.00", "t1"), writes=receipt("taken"))
    assert await bank.store.head_sequence() == head
    assert (await bank.accounts.load("a1")).balance == Decimal("10.00")


async def test_an_idempotent_retry_writes_nothing_again(
    bank: Bank, db: AsyncDatabase[Document]
) -> None:
    first = await bank.handle(CreditAccount("a1", "5.00", "t1"), writes=receipt("r1"))
    retry = await bank.handle(CreditAccount("a1", "5.00", "t1"), writes=receipt("r2"))
    assert retry.already_applied and retry.event_ids == first.event_ids
    assert [d["_id"] async for d in db["receipts"].find({})] == ["r1"]
