"""The bank's query object: what the API asks of the read models and of the streams."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.bank import (
    AccountPage,
    ActivateAccount,
    Bank,
    CreateAccount,
    CreditAccount,
    ReadModelLagging,
)
from esmongo.codec import Document
from esmongo.projections import rebuild


@pytest.fixture
async def bank(db: AsyncDatabase[Document]) -> Bank:
    bank = await Bank(db).init()
    for account_id, owner, funds in (("a1", "u1", "5.00"), ("a2", "u1", "50.00"), ("b1", "u2", "")):
        assert (await bank.handle(CreateAccount(account_id, owner, "Owner"))).success
        if funds:
            assert (await bank.handle(ActivateAccount(account_id))).success
            assert (await bank.handle(CreditAccount(account_id, funds, f"t-{account_id}"))).success
    return bank


async def test_the_owner_comes_from_the_stream_before_any_projection(bank: Bank) -> None:
    assert await bank.queries.owner("a2") == "u1"
    assert await bank.queries.owner("b1") == "u2"
    assert await bank.queries.owner("nope") is None
    assert await bank.queries.account("a1") is None  # nothing projected yet


async def test_waiting_for_the_read_model(bank: Bank) -> None:
    with pytest.raises(ReadModelLagging) as lagging:
        await bank.queries.wait_until_current(0.05)
    assert lagging.value.projection == "accounts_read"
    assert lagging.value.sequence == await bank.store.head_sequence()
    for projection in bank.projections:
        await rebuild(bank.store, projection)
    await bank.queries.wait_until_current(0.05)
    account = await bank.queries.account("a2")
    assert account is not None and account["balance"] == Decimal("50.00")


async def test_accounts_by_owner_status_and_balance_in_pages(bank: Bank) -> None:
    (accounts,) = [p for p in bank.projections if p.name == "accounts_read"]
    await rebuild(bank.store, accounts)
    queries = bank.queries

    def ids(page: AccountPage) -> list[str]:
        return [doc["accountId"] for doc in page.items]

    assert ids(await queries.accounts_page(owner="u1")) == ["a1", "a2"]
    assert ids(await queries.accounts_page(status="pending")) == ["b1"]
    rich = await queries.accounts_page(min_balance=Decimal("5.00"), max_balance=Decimal("49.99"))
    assert ids(rich) == ["a1"]
    first = await queries.accounts_page(limit=2)
    assert ids(first) == ["a1", "a2"] and first.next_after == "a2"
    last = await queries.accounts_page(after=first.next_after, limit=2)
    assert ids(last) == ["b1"] and last.next_after is None
    # By id prefix (the console's account search), alone and with a page's `after`.
    assert ids(await queries.accounts_page(id_prefix="a")) == ["a1", "a2"]
    assert ids(await queries.accounts_page(id_prefix="a", after="a1")) == ["a2"]
    assert ids(await queries.accounts_page(id_prefix="a", after="0")) == ["a1", "a2"]
    assert ids(await queries.accounts_page(id_prefix="b1")) == ["b1"]
    assert ids(await queries.accounts_page(id_prefix="c")) == []
