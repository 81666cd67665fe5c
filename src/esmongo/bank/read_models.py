"""The bank's read models: accounts_read (the seed's shape), transactions_read, analytics_hourly.

Each is a projection: handlers turn an account event into writes, the runner merges a
batch's writes (twenty credits to one account are one update) and commits them with the
checkpoint. All money is Decimal (Decimal128 in MongoDB), all times UTC.

accounts_read depends on event order (status, balance after the last movement), so it
stops at a poison event (FailurePolicy.STOP); the other two only add up or insert, so
they skip it and a later retry puts it in.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from esmongo import Projection, RecordedEvent
from esmongo.projections import FailurePolicy, Insert, Update, handles

ACCOUNTS_READ = "accounts_read"
"""The collection of AccountsReadModel: one document per account."""
ZERO = Decimal("0.00")
MOVEMENTS = ("account.credited", "account.debited")


def money(value: Any) -> Decimal:
    """A Decimal from what the store returns (Decimal, or Decimal128 without the codec)."""
    if isinstance(value, Decimal):
        return value
    to_decimal = getattr(value, "to_decimal", None)
    if to_decimal is not None:
        return Decimal(to_decimal())
    if isinstance(value, float):
        raise TypeError(f"money must not be a float: {value!r}")
    return Decimal(str(value))


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _kind(event: RecordedEvent) -> str:
    return "credit" if event.event_type == "account.credited" else "debit"


class AccountsReadModel(Projection):
    """One document per account, for queries: the seed's `accounts_read`."""

    name = "accounts_read"
    collections = {
        ACCOUNTS_READ: [
            IndexModel([("accountId", ASCENDING)], unique=True, name="account_id"),
            IndexModel([("owner.userId", ASCENDING)], name="owner"),
            IndexModel([("status", ASCENDING)], name="status"),
            IndexModel([("balance", ASCENDING)], name="balance"),
        ]
    }
    policy = FailurePolicy.STOP

    def _update(self, event: RecordedEvent, **changes: Any) -> Update:
        fields = {
            "updatedAt": event.timestamp,
            "lastEventVersion": event.aggregate_version,
            "lastEventId": event.event_id,
            **changes.pop("set", {}),
        }
        return Update(
            ACCOUNTS_READ, {"accountId": event.aggregate_id}, set=fields, upsert=False, **changes
        )

    @handles("account.created")
    def created(self, event: RecordedEvent) -> Update:
        data = event.data
        return Update(
            ACCOUNTS_READ,
            {"accountId": event.aggregate_id},
            set={
                "balance": ZERO,
                "currency": data["currency"],
                "status": "pending",
                "owner.userId": data["ownerId"],
                "owner.name": data["ownerName"],
                "createdAt": event.timestamp,
                "updatedAt": event.timestamp,
                "lastEventVersion": event.aggregate_version,
                "lastEventId": event.event_id,
                "stats.totalCredits": ZERO,
                "stats.totalDebits": ZERO,
                "stats.transactionCount": 0,
                "stats.lastTransactionAt": None,
            },
        )

    @handles("account.activated")
    def activated(self, event: RecordedEvent) -> Update:
        return self._update(event, set={"status": "active", "activatedAt": event.timestamp})

    @handles(*MOVEMENTS)
    def moved(self, event: RecordedEvent) -> Update:
        total = "stats.totalCredits" if _kind(event) == "credit" else "stats.totalDebits"
        return self._update(
            event,
            set={"balance": money(event.data["balanceAfter"])},
            inc={total: money(event.data["amount"]), "stats.transactionCount": 1},
            max={"stats.lastTransactionAt": event.timestamp},
        )

    @handles("account.frozen")
    def frozen(self, event: RecordedEvent) -> Update:
        return self._update(
            event,
            set={
                "status": "frozen",
                "frozenAt": event.timestamp,
                "frozenReason": event.data.get("reason"),
            },
        )

    @handles("account.unfrozen")
    def unfrozen(self, event: RecordedEvent) -> Update:
        return self._update(
            event, set={"status": "active", "frozenReason": None, "unfrozenAt": event.timestamp}
        )

    @handles("account.closed")
    def closed(self, event: RecordedEvent) -> Update:
        return self._update(
            event,
            set={
                "status": "closed",
                "closedAt": event.timestamp,
                "closeReason": event.data.get("reason"),
            },
        )


class TransactionsReadModel(Projection):
    """One document per credit or debit, with the balance after it: account statements."""

    name = "transactions_read"
    collections = {
        "transactions_read": [
            IndexModel(
                [("accountId", ASCENDING), ("timestamp", DESCENDING)], name="account_statement"
            ),
            IndexModel([("transactionId", ASCENDING)], name="transaction_id"),
        ]
    }
    policy = FailurePolicy.SKIP

    @handles(*MOVEMENTS)
    def moved(self, event: RecordedEvent) -> Insert:
        data = event.data
        document: dict[str, Any] = {
            "_id": event.event_id,
            "accountId": event.aggregate_id,
            "type": _kind(event),
            "amount": money(data["amount"]),
            "currency": data["currency"],
            "balanceAfter": money(data["balanceAfter"]),
            "transactionId": data["transactionId"],
            "reason": data.get("reason"),
            "timestamp": event.timestamp,
            "aggregateVersion": event.aggregate_version,
            "sequence": event.sequence,
        }
        for optional in ("transferId", "counterpartyAccountId"):
            if data.get(optional) is not None:
                document[optional] = data[optional]
        return Insert("transactions_read", document)


class AnalyticsHourlyReadModel(Projection):
    """Per hour and currency: how many credits and debits, and their totals."""

    name = "analytics_hourly"
    collections = {
        "analytics_hourly": [
            IndexModel(
                [("hour", ASCENDING), ("currency", ASCENDING)], unique=True, name="hour_currency"
            ),
        ]
    }
    policy = FailurePolicy.SKIP

    @handles(*MOVEMENTS)
    def moved(self, event: RecordedEvent) -> Update:
        amount = money(event.data["amount"])
        credit = _kind(event) == "credit"
        return Update(
            "analytics_hourly",
            {"hour": hour_of(event.timestamp), "currency": event.data["currency"]},
            # Every field every time: the document always has the full shape.
            inc={
                "metrics.creditCount": 1 if credit else 0,
                "metrics.creditTotal": amount if credit else ZERO,
                "metrics.debitCount": 0 if credit else 1,
                "metrics.debitTotal": ZERO if credit else amount,
            },
            max={"updatedAt": event.timestamp},
        )


def bank_projections() -> list[Projection]:
    """The three bank read models (what `esmongo serve` and the worker run)."""
    return [AccountsReadModel(), TransactionsReadModel(), AnalyticsHourlyReadModel()]
