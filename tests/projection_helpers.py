"""Shared by the projection tests: a bank event load, the fold the read models must equal,
and worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import AppendRequest, EventStore, NewEvent, RecordedEvent

READ_MODELS = ("accounts_read", "transactions_read", "analytics_hourly")
BANK = "esmongo.bank.read_models:bank_projections"
CENT = Decimal("0.01")


@dataclass
class _Account:
    id: str
    currency: str
    status: str = "active"
    balance: Decimal = Decimal("0.00")


@dataclass
class BankLoad:
    """Appends valid account events: creates, credits, debits, freezes, unfreezes."""

    store: EventStore
    seed: int = 7
    start: datetime = field(default_factory=lambda: datetime(2024, 3, 1, 9, 0, tzinfo=UTC))
    step: timedelta = timedelta(seconds=37)
    synthetic_time: bool = True
    appended: int = 0
    poison_every: int = 0
    """When > 0, every n-th movement carries reason "poison"."""
    accounts: list[_Account] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ticks = 0
        self._movements = 0

    def _at(self) -> datetime | None:
        self._ticks += 1
        if not self.synthetic_time:
            return None
        return self.start + self.step * self._ticks

    def _event(self, event_type: str, data: Mapping[str, Any]) -> NewEvent:
        return NewEvent(event_type, dict(data), timestamp=self._at())

    def _new_account(self) -> AppendRequest:
        n = len(self.accounts) + 1
        account = _Account(f"acc_{self.seed}_{n:05d}", self.rng.choice(("USD", "EUR", "GBP")))
        self.accounts.append(account)
        events = [
            self._event(
                "account.created",
                {
                    "ownerId": f"user_{n % 17}",
                    "ownerName": f"Owner {n}",
                    "currency": account.currency,
                },
            ),
            self._event("account.activated", {}),
        ]
        return AppendRequest("account", account.id, events)

    def _movements_for(self, account: _Account) -> AppendRequest:
        events = []
        if account.status == "frozen":
            account.status = "active"
            events.append(self._event("account.unfrozen", {}))
        elif self.rng.random() < 0.03:
            account.status = "frozen"
            return AppendRequest(
                "account", account.id, [self._event("account.frozen", {"reason": "review"})]
            )
        for _ in range(self.rng.randint(1, 3)):
            amount = (Decimal(self.rng.randint(100, 90_000)) / 100).quantize(CENT)
            credit = account.balance < amount or self.rng.random() < 0.6
            account.balance += amount if credit else -amount
            self._movements += 1
            poison = self.poison_every and self._movements % self.poison_every == 0
            events.append(
                self._event(
                    "account.credited" if credit else "account.debited",
                    {
                        "amount": amount,
                        "currency": account.currency,
                        "transactionId": f"txn_{self.seed}_{self._movements}",
                        "reason": "poison" if poison else None,
                        "balanceAfter": account.balance,
                    },
                )
            )
        return AppendRequest("account", account.id, events)

    async def append(self, events: int, *, streams_per_append: int = 4) -> int:
        """Append about `events` events (never fewer), a few streams per transaction."""
        target = self.appended + events
        while self.appended < target:
            requests: list[AppendRequest] = []
            used: set[str] = set()
            for _ in range(streams_per_append):
                if len(self.accounts) < 5 or self.rng.random() < 0.08:
                    request = self._new_account()
                else:
                    account = self.rng.choice(self.accounts)
                    if account.id in used:
                        continue
                    request = self._movements_for(account)
                used.add(request.aggregate_id)
                requests.append(request)
            written = await self.store.append_streams(requests)
            self.appended += sum(len(w) for w in written)
        return self.appended

    async def run(self, events: int, per_second: float, *, chunk: int = 10) -> None:
        """Append `events` events at about `per_second`, `chunk` at a time."""
        started = time.monotonic()
        goal = self.appended + events
        first = self.appended
        while self.appended < goal:
            await self.append(min(chunk, goal - self.appended))
            due = started + (self.appended - first) / per_second
            await asyncio.sleep(max(0.0, due - time.monotonic()))


async def loaded_store(
    db: AsyncDatabase[dict[str, Any]], events: int, **load: Any
) -> tuple[EventStore, BankLoad]:
    """A store holding `events` bank events, and the load that appended them."""
    store = EventStore(db)
    await store.init()
    bank_load = BankLoad(store, **load)
    await bank_load.append(events)
    return store, bank_load


async def all_events(store: EventStore) -> list[RecordedEvent]:
    return [event async for event in store.read_all(0)]


def fold(events: list[RecordedEvent]) -> dict[str, dict[Any, dict[str, Any]]]:
    """What each bank read model must hold after these events (written independently of
    the projections' handlers)."""
    accounts: dict[Any, dict[str, Any]] = {}
    transactions: dict[Any, dict[str, Any]] = {}
    analytics: dict[Any, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e.sequence):
        data, at = event.data, event.timestamp
        if event.aggregate_type != "account":
            continue
        if event.event_type == "account.created":
            accounts[event.aggregate_id] = {
                "accountId": event.aggregate_id,
                "balance": Decimal(0),
                "currency": data["currency"],
                "status": "pending",
                "owner": {"userId": data["ownerId"], "name": data["ownerName"]},
                "createdAt": at,
                "stats": {
                    "totalCredits": Decimal(0),
                    "totalDebits": Decimal(0),
                    "transactionCount": 0,
                    "lastTransactionAt": None,
                },
            }
        account = accounts[event.aggregate_id]
        account["updatedAt"] = at
        account["lastEventVersion"] = event.aggregate_version
        account["lastEventId"] = event.event_id
        if event.event_type == "account.activated":
            account["status"] = "active"
            account["activatedAt"] = at
        elif event.event_type == "account.frozen":
            account.update(status="frozen", frozenAt=at, frozenReason=data.get("reason"))
        elif event.event_type == "account.unfrozen":
            account.update(status="active", frozenReason=None, unfrozenAt=at)
        elif event.event_type in ("account.credited", "account.debited"):
            credit = event.event_type == "account.credited"
            amount = Decimal(data["amount"])
            stats = account["stats"]
            stats["totalCredits" if credit else "totalDebits"] += amount
            stats["transactionCount"] += 1
            last = stats["lastTransactionAt"]
            stats["lastTransactionAt"] = at if last is None else max(last, at)
            account["balance"] = Decimal(data["balanceAfter"])
            transactions[event.event_id] = {
                "_id": event.event_id,
                "accountId": event.aggregate_id,
                "type": "credit" if credit else "debit",
                "amount": amount,
                "currency": data["currency"],
                "balanceAfter": Decimal(data["balanceAfter"]),
                "transactionId": data["transactionId"],
                "reason": data.get("reason"),
                "timestamp": at,
                "aggregateVersion": event.aggregate_version,
                "sequence": event.sequence,
            }
            hour = at.replace(minute=0, second=0, microsecond=0)
            bucket = analytics.setdefault(
                (hour, data["currency"]),
                {
                    "hour": hour,
                    "currency": data["currency"],
                    "metrics": {
                        "creditCount": 0,
                        "creditTotal": Decimal(0),
                        "debitCount": 0,
                        "debitTotal": Decimal(0),
                    },
                    "updatedAt": at,
                },
            )
            metrics = bucket["metrics"]
            metrics["creditCount" if credit else "debitCount"] += 1
            metrics["creditTotal" if credit else "debitTotal"] += amount
            bucket["updatedAt"] = max(bucket["updatedAt"], at)
    return {
        "accounts_read": accounts,
        "transactions_read": transactions,
        "analytics_hourly": analytics,
    }


async def read_models(db: AsyncDatabase[dict[str, Any]]) -> dict[str, dict[Any, dict[str, Any]]]:
    """The read models as stored, keyed like `fold`'s (ObjectIds left out)."""
    accounts = {}
    async for doc in db["accounts_read"].find({}, {"_id": 0}):
        accounts[doc["accountId"]] = doc
    transactions = {doc["_id"]: doc async for doc in db["transactions_read"].find({})}
    analytics = {}
    async for doc in db["analytics_hourly"].find({}, {"_id": 0}):
        analytics[(doc["hour"], doc["currency"])] = doc
    return {
        "accounts_read": accounts,
        "transactions_read": transactions,
        "analytics_hourly": analytics,
    }


def assert_same(expected: dict[str, dict[Any, Any]], actual: dict[str, dict[Any, Any]]) -> None:
    """Every read model equals the fold: same documents, same values, exactly."""
    for name in expected:
        want, got = expected[name], actual.get(name, {})
        missing = sorted(map(str, set(want) - set(got)))[:5]
        extra = sorted(map(str, set(got) - set(want)))[:5]
        assert not missing and not extra, f"{name}: missing {missing}, unexpected {extra}"
        wrong = [key for key in want if want[key] != got[key]]
        assert not wrong, (
            f"{name}: {len(wrong)} documents differ, e.g. {wrong[0]}:\n"
            f"  expected {want[wrong[0]]}\n  actual   {got[wrong[0]]}"
        )


@dataclass
class Worker:
    """A `python -m esmongo.projections.worker` child process."""

    process: asyncio.subprocess.Process
    owner: str
    log: Path

    async def ready(self, timeout_s: float = 30.0) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        assert line.startswith(b"worker "), line + self.log.read_bytes()[-2000:]

    async def holds_leases(self, db: Any, names: tuple[str, ...], timeout_s: float) -> bool:
        """Wait until this worker holds the leases of all `names`; False if it dies first."""
        deadline = time.monotonic() + timeout_s
        leases = db["projection_leases"]
        while time.monotonic() < deadline and self.process.returncode is None:
            owners = {d["_id"]: d.get("owner") async for d in leases.find({"_id": {"$in": names}})}
            if all(owners.get(n) == self.owner for n in names):
                return True
            await asyncio.sleep(0.05)
        return False

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout_s)


def _append(path: Path) -> Any:
    return open(path, "ab")


async def spawn_worker(
    uri: str,
    db_name: str,
    owner: str,
    log_dir: Path,
    *,
    lease_ttl: float = 1.0,
    kill_probability: float = 0.0,
    batch_size: int = 200,
    extra: list[str] | None = None,
) -> Worker:
    log = log_dir / f"{owner}.log"
    args = [
        sys.executable,
        "-m",
        "esmongo.projections.worker",
        "--uri",
        uri,
        "--db",
        db_name,
        "--projections",
        BANK,
        "--owner",
        owner,
        "--lease-ttl",
        str(lease_ttl),
        "--standby-poll",
        str(lease_ttl / 5),
        "--idle-poll",
        "0.5",
        "--batch-size",
        str(batch_size),
        "--catch-up-batch-size",
        str(batch_size * 2),
        "--log-level",
        "WARNING",
        *(extra or []),
    ]
    if kill_probability:
        args += ["--kill-probability", str(kill_probability)]
    with _append(log) as err:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Worker(process, owner, log)
