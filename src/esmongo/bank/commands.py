"""The seed's commands and their handler: load, decide, save; retry on a version conflict.

A conflict means someone else changed the account since it was loaded. The command is
decided again on the fresh state (its rules are checked again), so retrying is safe.

Every command can be retried after an unknown outcome: money movements derive their event
ids from the transaction id, the other commands from their `command_id`. A retry the
account's state now refuses (already active, already exists...) is answered with the first
recording when that recording exists.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from esmongo import (
    AggregateNotFoundError,
    ConcurrencyError,
    DomainError,
    EsmongoError,
    EventValidationError,
    NewEvent,
    RecordedEvent,
    Repository,
)
from esmongo.backoff import jittered
from esmongo.bank.account import (
    Account,
    AccountError,
    CommandIdReused,
    TransactionIdReused,
    movement_event_id,
    parse_amount,
)
from esmongo.errors import DuplicateEventError, StreamArchived
from esmongo.metrics import COMMAND_CONFLICTS_EXHAUSTED, COMMAND_CONFLICTS_RETRIED
from esmongo.model.aggregate import command_event_id
from esmongo.store.unit_of_work import Writes

BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.1


@dataclass(frozen=True)
class CreateAccount:
    account_id: str
    owner_id: str
    owner_name: str
    currency: str = "USD"
    command_id: str | None = None
    """Derives the event ids: the same command retried with it is recorded once."""


@dataclass(frozen=True)
class CreditAccount:
    account_id: str
    amount: Any
    transaction_id: str = field(default_factory=lambda: f"txn_{uuid.uuid4().hex}")
    reason: str | None = None


@dataclass(frozen=True)
class DebitAccount:
    account_id: str
    amount: Any
    transaction_id: str = field(default_factory=lambda: f"txn_{uuid.uuid4().hex}")
    reason: str | None = None


@dataclass(frozen=True)
class ActivateAccount:
    account_id: str
    command_id: str | None = None
    """Derives the event ids: the same command retried with it is recorded once."""


@dataclass(frozen=True)
class FreezeAccount:
    account_id: str
    reason: str
    command_id: str | None = None
    """Derives the event ids: the same command retried with it is recorded once."""


@dataclass(frozen=True)
class UnfreezeAccount:
    account_id: str
    command_id: str | None = None
    """Derives the event ids: the same command retried with it is recorded once."""


@dataclass(frozen=True)
class CloseAccount:
    account_id: str
    reason: str | None = None
    command_id: str | None = None
    """Derives the event ids: the same command retried with it is recorded once."""


@dataclass(frozen=True)
class TransferFunds:
    """Debit one account and credit another, both or neither."""

    from_account: str
    to_account: str
    amount: Any
    transfer_id: str = field(default_factory=lambda: f"trf_{uuid.uuid4().hex}")
    reason: str | None = None


Transition = CreateAccount | ActivateAccount | FreezeAccount | UnfreezeAccount | CloseAccount
"""Commands whose event ids come from `command_id` (movements: from the transaction id)."""
RAISES: dict[type[Transition], str] = {
    CreateAccount: "account.created",
    ActivateAccount: "account.activated",
    FreezeAccount: "account.frozen",
    UnfreezeAccount: "account.unfrozen",
    CloseAccount: "account.closed",
}

AccountCommand = (
    CreateAccount
    | CreditAccount
    | DebitAccount
    | ActivateAccount
    | FreezeAccount
    | UnfreezeAccount
    | CloseAccount
)
Command = AccountCommand | TransferFunds


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the new events, or why it was refused."""

    success: bool
    aggregate_id: str
    version: int = 0
    events: tuple[RecordedEvent, ...] = ()
    error: EsmongoError | None = None
    already_applied: bool = False
    """True when the transaction was recorded before: `events` are that first recording."""

    @classmethod
    def recorded(cls, aggregate_id: str, events: Sequence[RecordedEvent]) -> CommandResult:
        """The result of a command that recorded `events` (`aggregate_id`: its target), as
        `handle` returns it; for writes that must carry the response (unit of work)."""
        version = max(e.aggregate_version for e in events if e.aggregate_id == aggregate_id)
        return cls(True, aggregate_id, version, tuple(events))

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]

    @property
    def last_sequence(self) -> int:
        return max((e.sequence for e in self.events), default=0)


class AccountCommandHandler:
    def __init__(self, repository: Repository[Account], *, max_attempts: int = 10) -> None:
        self.repository = repository
        self.max_attempts = max_attempts

    async def handle(
        self,
        command: Command,
        metadata: Mapping[str, Any] | None = None,
        *,
        writes: Writes | None = None,
    ) -> CommandResult:
        """Run a command. Rule violations come back as `error`, not as exceptions.

        `writes` (esmongo.store.unit_of_work) commit in the transaction of the command's events, or
        not at all: not when the command is refused, conflicts, or was applied before (an
        idempotent retry: the first run committed its writes). A failing write fails the
        command with nothing written, and is raised.
        """
        target = command_target(command)
        last_error: EsmongoError | None = None
        # First on the copy of the account this process kept, unread: the save's expected
        # version guards it. A conflict or a refusal then goes again on what is stored.
        optimistic = True
        conflicts = 0
        while True:
            try:
                if isinstance(command, TransferFunds):
                    return await self._transfer(command, metadata, writes, optimistic)
                return await self._on_account(command, metadata, writes, optimistic)
            except ConcurrencyError as exc:
                last_error = exc
                conflicts += 1
                if conflicts == self.max_attempts:
                    COMMAND_CONFLICTS_EXHAUSTED.labels(type(command).__name__).inc()
                    break
                COMMAND_CONFLICTS_RETRIED.labels(type(command).__name__).inc()
                if not optimistic:  # a stale copy needs a read, not a pause
                    await asyncio.sleep(jittered(conflicts, BACKOFF_BASE_S, BACKOFF_CAP_S))
                optimistic = False
            except (
                DomainError,
                AggregateNotFoundError,
                EventValidationError,
                StreamArchived,
            ) as exc:
                if optimistic:  # a refusal is never answered on a copy that was not read
                    optimistic = False
                    continue
                earlier = None
                if isinstance(exc, AccountError):
                    earlier = await self._applied_before(command)
                return earlier or CommandResult(False, target, error=exc)
            except DuplicateEventError:
                # A transfer id recorded before as a movement of one of the two accounts only.
                txn = command.transfer_id if isinstance(command, TransferFunds) else ""
                error = TransactionIdReused(
                    f"transaction {txn} was already used on one of the accounts of this transfer"
                )
                return CommandResult(False, target, error=error)
        return CommandResult(False, target, error=last_error)

    async def _applied_before(self, command: Command) -> CommandResult | None:
        """A movement refused by the account's state now (frozen since, balance spent since...)
        may be the retry of one that was applied: then it is answered as the first time."""
        if isinstance(command, Transition):
            return await self._transition_before(command)
        if isinstance(command, CreditAccount | DebitAccount):
            kind = "credit" if isinstance(command, CreditAccount) else "debit"
            moves = [(command.account_id, command.transaction_id, kind)]
            target = command.account_id
        elif isinstance(command, TransferFunds):
            moves = [
                (command.from_account, command.transfer_id, "debit"),
                (command.to_account, command.transfer_id, "credit"),
            ]
            target = command.from_account
        else:
            return None
        try:
            amount = parse_amount(command.amount)
        except AccountError:
            return None
        recorded: list[RecordedEvent] = []
        for account_id, transaction_id, _ in moves:
            if not transaction_id:
                return None
            event = await self.repository.recorded_event(
                movement_event_id(account_id, transaction_id)
            )
            if event is None:
                return None
            recorded.append(event)
        would_raise = [NewEvent(f"account.{kind}ed", {"amount": amount}) for _, _, kind in moves]
        return _earlier(target, would_raise, recorded)

    async def _transition_before(self, command: Transition) -> CommandResult | None:
        """The first recording of this command (same `command_id`), if there is one."""
        if not command.command_id:
            return None
        event_id = command_event_id(
            Account.aggregate_type, command.account_id, command.command_id, 0
        )
        event = await self.repository.recorded_event(event_id)
        if event is None:
            return None
        if event.event_type != RAISES[type(command)]:
            error = CommandIdReused(
                f"command id {command.command_id} was already used on {command.account_id} "
                f"for {event.event_type}"
            )
            return CommandResult(False, command.account_id, error=error)
        version = event.aggregate_version
        return CommandResult(True, command.account_id, version, (event,), already_applied=True)

    async def _on_account(
        self,
        command: AccountCommand,
        metadata: Mapping[str, Any] | None,
        writes: Writes | None,
        optimistic: bool,
    ) -> CommandResult:
        command_id = command.command_id if isinstance(command, Transition) else None
        if isinstance(command, CreateAccount):
            account = await self.repository.load_or_new(command.account_id, optimistic=optimistic)
            account.begin_command(command_id=command_id, metadata=metadata)
            account.create(command.owner_id, command.owner_name, command.currency)
        else:
            account = await self.repository.load(command.account_id, optimistic=optimistic)
            account.begin_command(command_id=command_id, metadata=metadata)
            decide(account, command)
        raised = account.uncommitted_events
        events = await self.repository.save(account, writes=writes)
        if events and events[0].replayed:
            return _earlier(account.id, raised, events)
        return CommandResult.recorded(account.id, events)

    async def _transfer(
        self,
        command: TransferFunds,
        metadata: Mapping[str, Any] | None,
        writes: Writes | None,
        optimistic: bool,
    ) -> CommandResult:
        if command.from_account == command.to_account:
            raise AccountError("cannot transfer to the same account", code="same_account")
        source = await self.repository.load(command.from_account, optimistic=optimistic)
        target = await self.repository.load(command.to_account, optimistic=optimistic)
        if source.currency != target.currency:
            raise AccountError(
                f"cannot transfer {source.currency} to a {target.currency} account",
                code="currency_mismatch",
            )
        source.begin_command(metadata=metadata)
        target.begin_command(metadata=metadata)
        link = {"transferId": command.transfer_id}
        txn = command.transfer_id
        source.debit(command.amount, txn, command.reason, counterpartyAccountId=target.id, **link)
        target.credit(command.amount, txn, command.reason, counterpartyAccountId=source.id, **link)
        raised = source.uncommitted_events + target.uncommitted_events
        saved = await self.repository.save_all([source, target], writes=writes)
        events = [e for stream in saved for e in stream]
        if saved[0][0].replayed:
            return _earlier(source.id, raised, events)
        return CommandResult.recorded(source.id, events)


def _earlier(
    aggregate_id: str, raised: Sequence[NewEvent], recorded: Sequence[RecordedEvent]
) -> CommandResult:
    """The store answered with an earlier recording of the same event ids.

    The same transaction (or command) again is a success that changed nothing; the same
    transaction id used for another movement, or command id for another command, is refused.
    """
    for new, old in zip(raised, recorded, strict=True):
        if new.event_type == old.event_type and new.data.get("amount") == old.data.get("amount"):
            continue
        if "transactionId" in old.data:
            error: AccountError = TransactionIdReused(
                f"transaction {old.data['transactionId']} was already recorded on "
                f"{old.aggregate_id} as {old.event_type} of {old.data['amount']}"
            )
        else:
            error = CommandIdReused(
                f"this command id was already used on {old.aggregate_id} for {old.event_type}"
            )
        return CommandResult(False, aggregate_id, error=error)
    version = max(e.aggregate_version for e in recorded if e.aggregate_id == aggregate_id)
    return CommandResult(True, aggregate_id, version, tuple(recorded), already_applied=True)


def command_target(command: Command) -> str:
    """The account a command's result is about (a transfer's: the one debited)."""
    return command.from_account if isinstance(command, TransferFunds) else command.account_id


def decide(account: Account, command: AccountCommand) -> None:
    """Apply one command to a loaded account."""
    match command:
        case CreditAccount():
            account.credit(command.amount, command.transaction_id, command.reason)
        case DebitAccount():
            account.debit(command.amount, command.transaction_id, command.reason)
        case ActivateAccount():
            account.activate()
        case FreezeAccount():
            account.freeze(command.reason)
        case UnfreezeAccount():
            account.unfreeze()
        case CloseAccount():
            account.close(command.reason)
        case _:
            raise TypeError(f"unknown command {type(command).__name__}")
