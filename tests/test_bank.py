"""The reference domain: the seed's account rules, idempotent transactions, transfers,
and the command handler's results."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import (
    AggregateNotFoundError,
    ConcurrencyError,
    DomainError,
    EventValidationError,
    NewEvent,
    Repository,
)
from esmongo.bank import (
    Account,
    AccountAlreadyExists,
    AccountCommandHandler,
    AccountError,
    AccountNotActive,
    AccountStatus,
    ActivateAccount,
    Bank,
    CloseAccount,
    CommandResult,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    FreezeAccount,
    InsufficientFunds,
    InvalidAmount,
    InvalidCurrency,
    InvalidTransition,
    TransactionIdReused,
    TransferFunds,
    UnfreezeAccount,
    parse_amount,
)
from esmongo.codec import Document
from esmongo.errors import UnknownEventTypeError
from esmongo.ops.audit import AUDIT_SCHEMAS

# ---- amounts (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10", "10.00"),
        ("0.01", "0.01"),
        ("12.5", "12.50"),
        (Decimal("7.10"), "7.10"),
        (3, "3.00"),
        ("1.000", "1.00"),  # trailing zeros are not extra cents
        ("999999999999999.99", "999999999999999.99"),
    ],
)
def test_amounts_accepted(given: object, expected: str) -> None:
    amount = parse_amount(given)
    assert isinstance(amount, Decimal)
    assert str(amount) == expected


@pytest.mark.parametrize(
    "given",
    [
        0,
        "0.00",
        "-5",
        Decimal("-0.01"),
        "0.001",
        "10.005",
        1.5,
        0.1,
        True,
        "abc",
        "",
        None,
        "NaN",
        "Infinity",
        "1E+15",
        "1E+30",  # overflowed the decimal context instead of being refused
        "123456789012345678901234567890",
    ],
)
def test_amounts_refused(given: object) -> None:
    with pytest.raises(InvalidAmount) as caught:
        parse_amount(given)
    assert caught.value.code == "invalid_amount"


# ---- account rules (pure) -------------------------------------------------------------


def opened(status: AccountStatus = AccountStatus.ACTIVE, balance: str = "0") -> Account:
    account = Account("a1")
    account.create("u1", "Ann", "EUR")
    if status is AccountStatus.PENDING:
        return account
    account.activate()
    if Decimal(balance):
        account.credit(balance, "seed")
    if status is AccountStatus.FROZEN:
        account.freeze("checks")
    elif status is AccountStatus.CLOSED:
        account.close()
    return account


def refused(error: type[DomainError], code: str, action: Any, *args: Any) -> None:
    with pytest.raises(error) as caught:
        action(*args)
    assert caught.value.code == code


def test_create_rules() -> None:
    account = Account("a1")
    refused(InvalidCurrency, "invalid_currency", account.create, "u1", "Ann", "JPY")
    refused(AccountError, "invalid_owner", account.create, "", "Ann")
    refused(AccountError, "invalid_owner", account.create, "u1", "")
    assert account.version == 0
    account.create("u1", "Ann", "GBP")
    assert (account.status, account.currency, account.balance) == (
        AccountStatus.PENDING,
        "GBP",
        Decimal("0"),
    )
    refused(AccountAlreadyExists, "account_exists", account.create, "u1", "Ann")


def test_nothing_but_create_on_a_missing_account() -> None:
    account = Account("ghost")
    refused(AccountError, "account_not_found", account.activate)
    refused(AccountError, "account_not_found", account.credit, "1", "t1")
    refused(AccountError, "account_not_found", account.freeze, "x")
    refused(AccountError, "account_not_found", account.close)


def test_money_moves_only_on_an_active_account() -> None:
    pending = opened(AccountStatus.PENDING)
    refused(AccountNotActive, "account_not_active", pending.credit, "5", "t1")
    frozen = opened(AccountStatus.FROZEN, "10")
    refused(AccountNotActive, "account_not_active", frozen.credit, "5", "t1")
    refused(AccountNotActive, "account_not_active", frozen.debit, "5", "t1")
    closed = opened(AccountStatus.CLOSED)
    refused(AccountNotActive, "account_not_active", closed.credit, "5", "t1")
    for account in (pending, frozen, closed):
        assert account.uncommitted_events[-1].event_type != "account.credited"


def test_credit_and_debit() -> None:
    account = opened()
    account.credit("100.10", "t1", "salary")
    account.debit(Decimal("40.05"), "t2")
    assert account.balance == Decimal("60.05")
    credited, debited = account.uncommitted_events[-2:]
    assert credited.event_type == "account.credited"
    assert credited.data == {
        "amount": Decimal("100.10"),
        "currency": "EUR",
        "transactionId": "t1",
        "reason": "salary",
        "balanceAfter": Decimal("100.10"),
    }
    assert debited.data["balanceAfter"] == Decimal("60.05")
    # The event id comes from the account and the transaction id.
    assert credited.event_id != debited.event_id
    again = opened()
    again.credit("1", "t1")
    assert again.uncommitted_events[-1].event_id == credited.event_id
    refused(InsufficientFunds, "insufficient_funds", account.debit, "60.06", "t3")
    refused(InvalidAmount, "invalid_amount", account.credit, 0.5, "t4")
    refused(InvalidAmount, "invalid_amount", account.credit, "1.234", "t4")
    refused(InvalidAmount, "invalid_amount", account.debit, "-1", "t4")
    refused(AccountError, "invalid_transaction_id", account.credit, "1", "")
    account.debit("60.05", "t5")  # down to exactly zero is fine
    assert account.balance == 0


def test_freeze_unfreeze_close() -> None:
    refused(InvalidTransition, "invalid_transition", opened(AccountStatus.PENDING).freeze, "x")
    account = opened(balance="5")
    refused(InvalidTransition, "invalid_transition", account.unfreeze)
    account.freeze("fraud check")
    assert (account.status, account.frozen_reason) == (AccountStatus.FROZEN, "fraud check")
    refused(InvalidTransition, "invalid_transition", account.freeze, "again")
    refused(InvalidTransition, "invalid_transition", account.activate)
    account.unfreeze()
    assert (account.status, account.frozen_reason) == (AccountStatus.ACTIVE, None)
    refused(InvalidTransition, "balance_not_zero", account.close)
    account.debit("5", "t9")
    account.close("moving away")
    assert account.status is AccountStatus.CLOSED
    refused(InvalidTransition, "invalid_transition", account.close)
    refused(InvalidTransition, "invalid_transition", account.activate)
    refused(InvalidTransition, "invalid_transition", account.freeze, "x")


def test_snapshot_state_round_trip() -> None:
    account = opened(AccountStatus.FROZEN, "12.34")
    restored = Account.from_snapshot("a1", account.version, account.snapshot_state())
    assert restored.snapshot_state() == account.snapshot_state()
    assert restored.view() == account.view()
    assert account.view()["balance"] == Decimal("12.34")
    assert account.view()["status"] == "frozen"


# ---- through the command handler ------------------------------------------------------


@pytest.fixture
async def bank(db: AsyncDatabase[Document]) -> Bank:
    return await Bank(db).init()


async def ok(bank: Bank, command: Any) -> CommandResult:
    result = await bank.handle(command)
    assert result.success, result.error
    assert result.error is None
    return result


async def fails(bank: Bank, command: Any, code: str) -> CommandResult:
    result = await bank.handle(command)
    assert not result.success
    assert result.error is not None
    assert result.error.code == code, result.error
    assert result.events == ()
    return result


async def active(bank: Bank, account_id: str, balance: str = "0", currency: str = "EUR") -> None:
    await ok(bank, CreateAccount(account_id, f"owner-{account_id}", "Owner", currency))
    await ok(bank, ActivateAccount(account_id))
    if Decimal(balance):
        await ok(bank, CreditAccount(account_id, balance, f"seed-{account_id}"))


async def balance(bank: Bank, account_id: str) -> Decimal:
    return (await bank.accounts.load(account_id)).balance


async def movements(bank: Bank, account_id: str) -> list[str]:
    return [
        e.event_type
        async for e in bank.store.read_stream("account", account_id)
        if e.event_type in ("account.credited", "account.debited")
    ]


async def test_bank_init_is_idempotent_and_strict(bank: Bank, db: AsyncDatabase[Document]) -> None:
    await bank.init()
    # The account's seven, and the audit trail's, which every application registers.
    assert await db["event_schemas"].count_documents({}) == 7 + len(AUDIT_SCHEMAS)
    with pytest.raises(UnknownEventTypeError):
        await bank.store.append("account", "a1", [NewEvent("account.renamed", {})])
    with pytest.raises(EventValidationError):
        await bank.store.append("account", "a1", [NewEvent("account.created", {"ownerId": "u"})])


async def test_command_results(bank: Bank) -> None:
    created = await ok(bank, CreateAccount("a1", "u1", "Ann", "EUR"))
    assert (created.aggregate_id, created.version) == ("a1", 1)
    assert [e.event_type for e in created.events] == ["account.created"]
    assert created.event_ids == [created.events[0].event_id]
    await ok(bank, ActivateAccount("a1"))
    credited = await ok(bank, CreditAccount("a1", "25.50", "t1", "gift"))
    assert credited.version == 3
    assert credited.last_sequence == 3
    assert credited.already_applied is False
    (event,) = credited.events
    assert event.data["amount"] == Decimal("25.50")
    assert isinstance(event.data["balanceAfter"], Decimal)
    await ok(bank, DebitAccount("a1", Decimal("5.25"), "t2"))
    assert await balance(bank, "a1") == Decimal("20.25")
    (stored,) = [e async for e in bank.store.read_stream("account", "a1", 3, 3)]
    assert stored.data["amount"] == Decimal("25.50")
    assert stored.data["balanceAfter"] == Decimal("25.50")


async def test_command_errors_have_stable_codes(bank: Bank) -> None:
    await active(bank, "a1", "10")
    await ok(bank, CreateAccount("p1", "u2", "Bo"))
    missing = await fails(bank, CreditAccount("nope", "1"), "aggregate_not_found")
    assert isinstance(missing.error, AggregateNotFoundError)
    assert missing.aggregate_id == "nope"
    await fails(bank, CreateAccount("a1", "u1", "Ann"), "account_exists")
    await fails(bank, CreateAccount("x1", "u1", "Ann", "XYZ"), "invalid_currency")
    await fails(bank, CreateAccount("x1", "", "Ann"), "invalid_owner")
    await fails(bank, CreditAccount("p1", "1"), "account_not_active")
    await fails(bank, CreditAccount("a1", 1.25), "invalid_amount")
    await fails(bank, CreditAccount("a1", "0"), "invalid_amount")
    await fails(bank, CreditAccount("a1", "1.001"), "invalid_amount")
    await fails(bank, CreditAccount("a1", "1E+30"), "invalid_amount")
    await fails(bank, DebitAccount("a1", "10.01"), "insufficient_funds")
    await fails(bank, CloseAccount("a1"), "balance_not_zero")
    await fails(bank, UnfreezeAccount("a1"), "invalid_transition")
    await fails(bank, FreezeAccount("p1", "x"), "invalid_transition")
    await fails(bank, ActivateAccount("a1"), "invalid_transition")
    await ok(bank, FreezeAccount("a1", "checks"))
    await fails(bank, DebitAccount("a1", "1"), "account_not_active")
    await ok(bank, UnfreezeAccount("a1"))
    await ok(bank, DebitAccount("a1", "10"))
    await ok(bank, CloseAccount("a1", "bye"))
    await fails(bank, CloseAccount("a1"), "invalid_transition")
    await fails(bank, CreditAccount("a1", "1"), "account_not_active")
    account = await bank.accounts.load("a1")
    assert (account.status, account.balance) == (AccountStatus.CLOSED, Decimal("0"))


async def test_an_event_the_schema_refuses_is_an_error_result_not_an_exception(
    bank: Bank,
) -> None:
    await active(bank, "a1")
    result = await fails(bank, CreditAccount("a1", "5", "t1", reason="x" * 501), "invalid_event")
    assert isinstance(result.error, EventValidationError)
    assert [v.path for v in result.error.violations] == ["$.reason"]
    assert await balance(bank, "a1") == 0


async def test_a_repeated_transaction_moves_money_once(bank: Bank) -> None:
    await active(bank, "a1")
    first = await ok(bank, CreditAccount("a1", "10.00", "t1"))
    again = await ok(bank, CreditAccount("a1", "10", "t1"))
    assert again.already_applied is True
    assert again.events == first.events
    assert again.version == first.version
    await ok(bank, DebitAccount("a1", "4", "t2"))
    assert (await ok(bank, DebitAccount("a1", "4", "t2"))).already_applied
    assert await balance(bank, "a1") == Decimal("6.00")
    assert await movements(bank, "a1") == ["account.credited", "account.debited"]
    # The same transaction id on another account is another transaction.
    await active(bank, "a2")
    await ok(bank, CreditAccount("a2", "1", "t1"))
    assert await balance(bank, "a2") == Decimal("1.00")


async def test_a_transaction_id_reused_for_another_movement_is_refused(bank: Bank) -> None:
    await active(bank, "a1")
    await ok(bank, CreditAccount("a1", "10", "t1"))
    reused = await fails(bank, CreditAccount("a1", "11", "t1"), "transaction_id_reused")
    assert isinstance(reused.error, TransactionIdReused)
    await fails(bank, DebitAccount("a1", "10", "t1"), "transaction_id_reused")
    assert await balance(bank, "a1") == Decimal("10.00")
    assert await movements(bank, "a1") == ["account.credited"]


async def test_a_retry_is_answered_as_the_first_time_even_if_the_state_moved_on(
    bank: Bank,
) -> None:
    """A client that retries a debit that went through must not hear 'insufficient funds'."""
    await active(bank, "a1", "10")
    first = await ok(bank, DebitAccount("a1", "10", "t1"))
    retry = await ok(bank, DebitAccount("a1", "10", "t1"))  # balance is 0 now
    assert retry.already_applied
    assert retry.events == first.events
    await ok(bank, CreditAccount("a1", "3", "t2"))
    await ok(bank, FreezeAccount("a1", "checks"))
    frozen_retry = await ok(bank, CreditAccount("a1", "3", "t2"))
    assert frozen_retry.already_applied
    # Still refused when the retry is not the same movement, or a new one.
    await fails(bank, CreditAccount("a1", "4", "t2"), "transaction_id_reused")
    await fails(bank, CreditAccount("a1", "3", "t3"), "account_not_active")
    assert await balance(bank, "a1") == Decimal("3.00")


async def test_concurrent_credits_with_one_transaction_id_move_money_once(bank: Bank) -> None:
    await active(bank, "a1")
    results = await asyncio.gather(
        *[bank.handle(CreditAccount("a1", "7.00", "same")) for _ in range(8)]
    )
    assert all(r.success for r in results), [r.error for r in results]
    # Every caller is told of the one recording, and exactly one of them made it.
    assert all(r.events == results[0].events for r in results)
    assert sorted(r.already_applied for r in results) == [False] + [True] * 7
    assert len(results[0].events) == 1
    assert await balance(bank, "a1") == Decimal("7.00")
    assert await movements(bank, "a1") == ["account.credited"]


async def test_concurrent_credits_are_retried_and_all_applied(bank: Bank) -> None:
    await active(bank, "a1")
    results = await asyncio.gather(
        *[bank.handle(CreditAccount("a1", f"{i}.00", f"t{i}")) for i in range(1, 9)]
    )
    assert all(r.success for r in results), [r.error for r in results]
    assert sorted(r.version for r in results) == list(range(3, 11))
    assert await balance(bank, "a1") == Decimal(sum(range(1, 9)))


class Interfering(Repository[Account]):
    """Loads, then lets another writer credit the same account before the caller saves:
    a real conflict on the real store, `times` times."""

    def __init__(self, bank: Bank, times: int) -> None:
        super().__init__(bank.store, Account)
        self.other = Repository(bank.store, Account)
        self.times = times
        self.loads = 0

    async def load(self, aggregate_id: str, *, optimistic: bool = False) -> Account:
        account = await super().load(aggregate_id, optimistic=optimistic)
        self.loads += 1
        if self.loads <= self.times:
            rival = await self.other.load(aggregate_id)
            rival.credit("1", f"rival-{self.loads}")
            await self.other.save(rival)
        return account


async def test_the_handler_retries_a_concurrency_error(bank: Bank) -> None:
    await active(bank, "a1")
    repository = Interfering(bank, times=2)
    result = await AccountCommandHandler(repository).handle(CreditAccount("a1", "10", "mine"))
    assert result.success, result.error
    assert repository.loads == 3
    assert result.version == 5  # after the two rival credits
    assert await balance(bank, "a1") == Decimal("12.00")


async def test_the_handler_gives_up_with_the_concurrency_error(bank: Bank) -> None:
    await active(bank, "a1")
    repository = Interfering(bank, times=100)
    handler = AccountCommandHandler(repository, max_attempts=3)
    result = await handler.handle(CreditAccount("a1", "10", "mine"))
    assert not result.success
    assert isinstance(result.error, ConcurrencyError)
    assert result.error.code == "concurrency_conflict"
    assert repository.loads == 3
    assert await balance(bank, "a1") == Decimal("3.00")  # only the rivals


# ---- transfers ------------------------------------------------------------------------


async def test_transfer_moves_money_between_two_accounts_atomically(bank: Bank) -> None:
    await active(bank, "a", "100")
    await active(bank, "b")
    result = await ok(bank, TransferFunds("a", "b", "30.50", "trf1", "rent"))
    assert (await balance(bank, "a"), await balance(bank, "b")) == (
        Decimal("69.50"),
        Decimal("30.50"),
    )
    debit, credit = result.events
    assert (debit.aggregate_id, debit.event_type) == ("a", "account.debited")
    assert (credit.aggregate_id, credit.event_type) == ("b", "account.credited")
    assert credit.sequence == debit.sequence + 1  # one append
    for event, other in ((debit, "b"), (credit, "a")):
        assert event.data["transferId"] == "trf1"
        assert event.data["counterpartyAccountId"] == other
        assert event.data["amount"] == Decimal("30.50")
        assert event.data["reason"] == "rent"
    again = await ok(bank, TransferFunds("a", "b", "30.50", "trf1"))
    assert again.already_applied
    assert await balance(bank, "a") == Decimal("69.50")
    await fails(bank, TransferFunds("a", "b", "1", "trf1"), "transaction_id_reused")


async def test_refused_transfer_moves_nothing(bank: Bank) -> None:
    await active(bank, "a", "10")
    await active(bank, "b")
    await active(bank, "usd", currency="USD")
    await ok(bank, CreateAccount("pending", "u", "P", "EUR"))
    head = await bank.store.head_sequence()
    await fails(bank, TransferFunds("a", "b", "10.01"), "insufficient_funds")
    await fails(bank, TransferFunds("a", "pending", "1"), "account_not_active")
    await fails(bank, TransferFunds("a", "a", "1"), "same_account")
    await fails(bank, TransferFunds("a", "usd", "1"), "currency_mismatch")
    await fails(bank, TransferFunds("a", "ghost", "1"), "aggregate_not_found")
    await fails(bank, TransferFunds("a", "b", "0.001"), "invalid_amount")
    await ok(bank, FreezeAccount("b", "checks"))
    head = await bank.store.head_sequence()
    await fails(bank, TransferFunds("a", "b", "1"), "account_not_active")
    assert await bank.store.head_sequence() == head
    assert await balance(bank, "a") == Decimal("10.00")
    assert await movements(bank, "b") == []


async def test_transfer_id_used_before_on_one_side_is_refused(bank: Bank) -> None:
    await active(bank, "a", "10")
    await active(bank, "b")
    await ok(bank, CreditAccount("b", "1", "shared-id"))
    await fails(bank, TransferFunds("a", "b", "1", "shared-id"), "transaction_id_reused")
    assert (await balance(bank, "a"), await balance(bank, "b")) == (
        Decimal("10.00"),
        Decimal("1.00"),
    )


async def test_transfer_retry_after_the_money_was_spent(bank: Bank) -> None:
    await active(bank, "a", "10")
    await active(bank, "b")
    await ok(bank, TransferFunds("a", "b", "10", "trf1"))
    await ok(bank, TransferFunds("b", "a", "10", "back"))
    await ok(bank, DebitAccount("a", "10", "spent"))
    retry = await ok(bank, TransferFunds("a", "b", "10", "trf1"))
    assert retry.already_applied
    assert (await balance(bank, "a"), await balance(bank, "b")) == (0, 0)


async def test_concurrent_transfers_conserve_money(bank: Bank) -> None:
    names = ["a", "b", "c"]
    for name in names:
        await active(bank, name, "20")
    transfers = [
        TransferFunds(names[i % 3], names[(i + 1) % 3], f"{i + 1}.00", f"trf{i}") for i in range(9)
    ]
    results = await asyncio.gather(*[bank.handle(t) for t in transfers])
    for result in results:
        assert result.success or (result.error and result.error.code == "insufficient_funds")
    balances = [await balance(bank, n) for n in names]
    assert sum(balances) == Decimal("60.00")
    assert all(b >= 0 for b in balances)
    moved = sum(Decimal(t.amount) for t, r in zip(transfers, results, strict=True) if r.success)
    debits = [
        e.data["amount"]
        async for e in bank.store.read_all(event_types=["account.debited"])
        if "transferId" in e.data
    ]
    assert sum(debits) == moved
    assert len(debits) == sum(r.success for r in results)
