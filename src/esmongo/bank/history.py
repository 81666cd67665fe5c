"""An account's balance over a time window: the opening balance, then one point per
credit or debit with the balance after it. Decimal throughout (the seed used floats).

Built by replaying the account's stream once, up to `end`, through
`esmongo.TemporalQueries` (upcast, and cut by the same rule as `state_at`), so the
balances are the ones the aggregate itself computes and `closing_balance` equals
`state_at(at=end).balance`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from esmongo import AggregateNotFoundError, EventStore
from esmongo.bank.account import ZERO, Account
from esmongo.events import StreamId
from esmongo.model import TemporalQueries
from esmongo.model.temporal import require_aware

MOVEMENTS = {"account.credited": "credit", "account.debited": "debit"}


@dataclass(frozen=True)
class BalancePoint:
    """One credit or debit and the balance right after it."""

    timestamp: datetime
    kind: str
    """"credit" or "debit"."""
    amount: Decimal
    balance: Decimal
    transaction_id: str | None
    version: int
    sequence: int


@dataclass(frozen=True)
class BalanceHistory:
    account_id: str
    currency: str
    start: datetime
    end: datetime
    opening_balance: Decimal
    """The balance just before `start` (zero when the account did not exist yet)."""
    points: tuple[BalancePoint, ...]

    @property
    def closing_balance(self) -> Decimal:
        return self.points[-1].balance if self.points else self.opening_balance


async def balance_history(
    store: EventStore, account_id: str, start: datetime, end: datetime
) -> BalanceHistory:
    """Balances of one account from `start` to `end`, both inclusive.

    Raises AggregateNotFoundError when the account has no event at all.
    """
    require_aware(start)
    require_aware(end)
    if start > end:
        raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")
    account = Account(account_id)
    opening = ZERO
    points: list[BalancePoint] = []
    in_window = False
    events = TemporalQueries(store, Account).events_at(account_id, at=end)
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            account.apply(event)
            in_window = in_window or event.timestamp >= start
            if not in_window:
                opening = account.balance
                continue
            kind = MOVEMENTS.get(event.event_type)
            if kind is not None:
                points.append(
                    BalancePoint(
                        timestamp=event.timestamp,
                        kind=kind,
                        amount=Decimal(event.data["amount"]),
                        balance=account.balance,
                        transaction_id=event.data.get("transactionId"),
                        version=event.aggregate_version,
                        sequence=event.sequence,
                    )
                )
    if not account.exists and await store.stream_version(Account.aggregate_type, account_id) == 0:
        raise AggregateNotFoundError(StreamId(Account.aggregate_type, account_id))
    return BalanceHistory(
        account_id=account_id,
        currency=account.currency,
        start=start,
        end=end,
        opening_balance=opening,
        points=tuple(points),
    )
