"""The seed's bank account, as an aggregate: rules in command methods, state in handlers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from esmongo import Aggregate, DomainError, applies
from esmongo.events import stable_event_id
from esmongo.model import EventLike

CURRENCIES = ("USD", "EUR", "GBP")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")


class AccountStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


class AccountError(DomainError):
    """An account rule refused the command."""


class InvalidAmount(AccountError):
    code = "invalid_amount"


class InvalidCurrency(AccountError):
    code = "invalid_currency"


class AccountAlreadyExists(AccountError):
    code = "account_exists"


class AccountNotActive(AccountError):
    code = "account_not_active"


class InsufficientFunds(AccountError):
    code = "insufficient_funds"


class InvalidTransition(AccountError):
    code = "invalid_transition"


class TransactionIdReused(AccountError):
    code = "transaction_id_reused"


class CommandIdReused(AccountError):
    """A command id (Idempotency-Key) recorded before for another command on the account."""

    code = "command_id_reused"


def parse_amount(value: object) -> Decimal:
    """A positive amount with at most two decimals. Floats are refused: they lose cents."""
    if isinstance(value, bool | float):
        raise InvalidAmount(
            f"amount must be a decimal string or Decimal, not {type(value).__name__}"
        )
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InvalidAmount(f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise InvalidAmount(f"amount {value!r} is not a finite number")
    if amount <= 0:
        raise InvalidAmount(f"amount must be positive, got {amount}")
    # Size first: quantizing a huge amount overflows the decimal context (InvalidOperation).
    if amount.adjusted() >= 15:
        raise InvalidAmount(f"amount {amount} is too large")
    if amount != amount.quantize(CENT):
        raise InvalidAmount(f"amount {amount} has more than two decimal places")
    return amount.quantize(CENT)


def movement_event_id(account_id: str, transaction_id: str) -> str:
    """One id per (account, transaction): the store's unique event id index then makes a
    repeated transaction a no-op, across processes, without keeping every id in the state."""
    return stable_event_id("account", account_id, "transaction", transaction_id)


class Account(Aggregate):
    aggregate_type = "account"
    schema_version = 1

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner_id: str | None = None
        self.owner_name: str | None = None
        self.currency = "USD"
        self.status = AccountStatus.PENDING
        self.balance = ZERO
        self.created_at: datetime | None = None
        self.last_modified: datetime | None = None
        self.frozen_reason: str | None = None

    # ---- commands ---------------------------------------------------------------

    def create(self, owner_id: str, owner_name: str, currency: str = "USD") -> None:
        if self.exists:
            raise AccountAlreadyExists(f"account {self.id} already exists")
        if currency not in CURRENCIES:
            raise InvalidCurrency(
                f"currency must be one of {', '.join(CURRENCIES)}, not {currency!r}"
            )
        if not owner_id or not owner_name:
            raise AccountError("owner id and owner name are required", code="invalid_owner")
        self.raise_event(
            "account.created",
            {"ownerId": owner_id, "ownerName": owner_name, "currency": currency},
        )

    def activate(self) -> None:
        self._require_exists()
        if self.status != AccountStatus.PENDING:
            raise InvalidTransition(
                f"account {self.id} is {self.status}; only a pending account can be activated"
            )
        self.raise_event("account.activated", {})

    def credit(
        self, amount: object, transaction_id: str, reason: str | None = None, **extra: Any
    ) -> None:
        """Add money. The event id comes from the transaction id: see `movement_event_id`."""
        self._move("credit", amount, transaction_id, reason, extra)

    def debit(
        self, amount: object, transaction_id: str, reason: str | None = None, **extra: Any
    ) -> None:
        """Take money out. The event id comes from the transaction id."""
        self._move("debit", amount, transaction_id, reason, extra)

    def freeze(self, reason: str) -> None:
        self._require_exists()
        if self.status != AccountStatus.ACTIVE:
            raise InvalidTransition(
                f"account {self.id} is {self.status}; only an active account can be frozen"
            )
        self.raise_event("account.frozen", {"reason": reason})

    def unfreeze(self) -> None:
        self._require_exists()
        if self.status != AccountStatus.FROZEN:
            raise InvalidTransition(
                f"account {self.id} is {self.status}; only a frozen account can be unfrozen"
            )
        self.raise_event("account.unfrozen", {})

    def close(self, reason: str | None = None) -> None:
        self._require_exists()
        if self.status == AccountStatus.CLOSED:
            raise InvalidTransition(f"account {self.id} is already closed")
        if self.balance != 0:
            raise InvalidTransition(
                f"account {self.id} has a balance of {self.balance} {self.currency}; "
                "only an account with a zero balance can be closed",
                code="balance_not_zero",
            )
        self.raise_event("account.closed", {"reason": reason})

    def _move(
        self,
        kind: str,
        amount: object,
        transaction_id: str,
        reason: str | None,
        extra: Mapping[str, Any],
    ) -> None:
        self._require_exists()
        value = parse_amount(amount)
        if not transaction_id:
            raise AccountError("a transaction id is required", code="invalid_transaction_id")
        if self.status != AccountStatus.ACTIVE:
            raise AccountNotActive(f"account {self.id} is {self.status}, not active")
        if kind == "debit" and self.balance < value:
            raise InsufficientFunds(
                f"account {self.id} has {self.balance} {self.currency}, cannot debit {value}"
            )
        after = self.balance + value if kind == "credit" else self.balance - value
        data: dict[str, Any] = {
            "amount": value,
            "currency": self.currency,
            "transactionId": transaction_id,
            "reason": reason,
            "balanceAfter": after,
            **extra,
        }
        event_id = movement_event_id(self.id, transaction_id)
        self.raise_event(f"account.{kind}ed", data, event_id=event_id)

    def _require_exists(self) -> None:
        if not self.exists:
            raise AccountError(f"account {self.id} does not exist", code="account_not_found")

    # ---- state changes ----------------------------------------------------------

    @applies("account.created")
    def _created(self, event: EventLike) -> None:
        self.owner_id = event.data["ownerId"]
        self.owner_name = event.data["ownerName"]
        self.currency = event.data["currency"]
        self.status = AccountStatus.PENDING
        self.created_at = self.last_modified = event.timestamp

    @applies("account.activated")
    def _activated(self, event: EventLike) -> None:
        self.status = AccountStatus.ACTIVE
        self.last_modified = event.timestamp

    @applies("account.credited")
    def _credited(self, event: EventLike) -> None:
        self._moved("credit", event)

    @applies("account.debited")
    def _debited(self, event: EventLike) -> None:
        self._moved("debit", event)

    def _moved(self, kind: str, event: EventLike) -> None:
        amount = Decimal(event.data["amount"])
        self.balance = self.balance + amount if kind == "credit" else self.balance - amount
        self.last_modified = event.timestamp

    @applies("account.frozen")
    def _frozen(self, event: EventLike) -> None:
        self.status = AccountStatus.FROZEN
        self.frozen_reason = event.data.get("reason")
        self.last_modified = event.timestamp

    @applies("account.unfrozen")
    def _unfrozen(self, event: EventLike) -> None:
        self.status = AccountStatus.ACTIVE
        self.frozen_reason = None
        self.last_modified = event.timestamp

    @applies("account.closed")
    def _closed(self, event: EventLike) -> None:
        self.status = AccountStatus.CLOSED
        self.last_modified = event.timestamp

    # ---- snapshots --------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "accountId": self.id,
            "owner": {"userId": self.owner_id, "name": self.owner_name},
            "currency": self.currency,
            "status": str(self.status),
            "balance": self.balance,
            "createdAt": self.created_at,
            "lastModified": self.last_modified,
            "frozenReason": self.frozen_reason,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.owner_id = state["owner"]["userId"]
        self.owner_name = state["owner"]["name"]
        self.currency = state["currency"]
        self.status = AccountStatus(state["status"])
        self.balance = Decimal(state["balance"])
        self.created_at = state["createdAt"]
        self.last_modified = state["lastModified"]
        self.frozen_reason = state.get("frozenReason")

    def view(self) -> dict[str, Any]:
        """The state as a plain dict, for printing and temporal queries."""
        return self.snapshot_state() | {"version": self.version}
