"""Time travel: state_at equals a replay to that point, aggregates_at is one pass over the
type's events, balance history in Decimal."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import (
    AggregateNotFoundError,
    AppendRequest,
    EventStore,
    NewEvent,
    RecordedEvent,
    SchemaRegistry,
    SnapshotStore,
)
from esmongo.bank import ACCOUNT_SCHEMAS, Account, AccountStatus, balance_history
from esmongo.codec import Document
from esmongo.model import TemporalQueries
from esmongo.schema import EventSchema

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def created(at: datetime, currency: str = "EUR") -> NewEvent:
    return NewEvent(
        "account.created",
        {"ownerId": "u1", "ownerName": "Ann", "currency": currency},
        timestamp=at,
    )


def movement(kind: str, amount: str, balance: Decimal, tx: str, at: datetime) -> NewEvent:
    data = {
        "amount": Decimal(amount),
        "currency": "EUR",
        "transactionId": tx,
        "balanceAfter": balance,
    }
    return NewEvent(f"account.{kind}ed", data, timestamp=at)


def account_stream(rng: random.Random, start: datetime, n: int) -> list[NewEvent]:
    """A valid account history: created, activated, then credits/debits and a freeze or
    two, timestamps never decreasing and often equal."""
    at = start
    events = [created(at)]
    at += timedelta(seconds=rng.choice([0, 0, 1, 3]))
    events.append(NewEvent("account.activated", {}, timestamp=at))
    balance, frozen = Decimal("0.00"), False
    for i in range(n):
        at += timedelta(seconds=rng.choice([0, 0, 1, 2, 7]))
        roll = rng.random()
        if roll < 0.08:
            events.append(
                NewEvent("account.unfrozen", {}, timestamp=at)
                if frozen
                else NewEvent("account.frozen", {"reason": "check"}, timestamp=at)
            )
            frozen = not frozen
            continue
        if frozen:
            events.append(NewEvent("account.unfrozen", {}, timestamp=at))
            frozen = False
            continue
        amount = Decimal(rng.randint(1, 50_000)) / 100
        if roll < 0.4 and balance >= amount:
            balance -= amount
            events.append(movement("debit", str(amount), balance, f"t{i}", at))
        else:
            balance += amount
            events.append(movement("credit", str(amount), balance, f"t{i}", at))
    return events


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db, registry=SchemaRegistry(ACCOUNT_SCHEMAS, strict=True))
    await store.init()
    return store


@dataclass
class Dataset:
    store: EventStore
    streams: dict[str, list[RecordedEvent]]

    @property
    def times(self) -> list[datetime]:
        return sorted({e.timestamp for events in self.streams.values() for e in events})


async def write(store: EventStore, streams: dict[str, list[NewEvent]]) -> Dataset:
    """Append the streams interleaved (a few events of each per transaction), as a busy
    store would hold them, and read back what was recorded."""
    pending = {k: list(v) for k, v in streams.items()}
    while pending:
        requests = []
        for account_id in list(pending):
            chunk, pending[account_id] = pending[account_id][:3], pending[account_id][3:]
            requests.append(AppendRequest("account", account_id, chunk))
            if not pending[account_id]:
                del pending[account_id]
        await store.append_streams(requests)
    recorded = {
        account_id: [e async for e in store.read_stream("account", account_id)]
        for account_id in streams
    }
    return Dataset(store, recorded)


@pytest.fixture
async def dataset(store: EventStore) -> Dataset:
    rng = random.Random(7)
    streams = {
        f"acc-{i:02d}": account_stream(rng, T0 + timedelta(seconds=rng.randint(0, 40)), n)
        for i, n in enumerate([0, 3, 12, 25, 40])
    }
    return await write(store, streams)


def replay(events: list[RecordedEvent], account_id: str) -> Account | None:
    account = Account(account_id)
    for event in events:
        account.apply(event)
    return account if account.exists else None


def prefix_at(events: list[RecordedEvent], at: datetime) -> list[RecordedEvent]:
    """The oracle of "state at T": events in version order until the first one after T."""
    taken = []
    for event in events:
        if event.timestamp > at:
            break
        taken.append(event)
    return taken


def view(account: Account | None) -> dict[str, Any] | None:
    return None if account is None else account.view()


@st.composite
def moments(draw: st.DrawFn, times: list[datetime]) -> datetime:
    """Exactly an event's time, or just before/after it, or outside the whole range."""
    base = draw(st.sampled_from([times[0] - timedelta(hours=1), *times, times[-1] + MS]))
    return base + draw(st.sampled_from([-MS, timedelta(0), timedelta(0), MS]))


# ---- state_at -----------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
async def test_state_at_version_equals_replay_of_that_many_events(
    dataset: Dataset, data: st.DataObject
) -> None:
    queries = TemporalQueries(dataset.store, Account)
    account_id = data.draw(st.sampled_from(sorted(dataset.streams)))
    events = dataset.streams[account_id]
    version = data.draw(st.integers(0, len(events) + 2))
    got = await queries.state_at(account_id, version=version)
    assert view(got) == view(replay(events[:version], account_id))


@EXAMPLES
@given(data=st.data())
async def test_state_at_time_equals_replay_of_events_until_then(
    dataset: Dataset, data: st.DataObject
) -> None:
    queries = TemporalQueries(dataset.store, Account)
    account_id = data.draw(st.sampled_from(sorted(dataset.streams)))
    at = data.draw(moments(dataset.times))
    events = dataset.streams[account_id]
    got = await queries.state_at(account_id, at=at)
    assert view(got) == view(replay(prefix_at(events, at), account_id))
    if got is not None:  # and it is the state of the last event at or before `at`
        assert got.version == max(e.aggregate_version for e in events if e.timestamp <= at)


@EXAMPLES
@given(data=st.data())
async def test_snapshots_do_not_change_past_states(dataset: Dataset, data: st.DataObject) -> None:
    snapshots = SnapshotStore(dataset.store.db)
    await snapshots.init()
    middle = {k: len(events) // 2 + 1 for k, events in dataset.streams.items()}
    for account_id, events in dataset.streams.items():
        account = replay(events[: middle[account_id]], account_id)
        assert account is not None
        await snapshots.save("account", account_id, account.version, account.snapshot_state(), 1)
    plain = TemporalQueries(dataset.store, Account)
    cached = TemporalQueries(dataset.store, Account, snapshots=snapshots)
    account_id = data.draw(st.sampled_from(sorted(dataset.streams)))
    events = dataset.streams[account_id]
    near = [v for v in range(middle[account_id] - 2, middle[account_id] + 2) if v >= 0]
    version = data.draw(st.none() | st.integers(0, len(events) + 1) | st.sampled_from(near))
    near_times = [e.timestamp for e in events[max(0, middle[account_id] - 2) :]][:4]
    at = data.draw(st.none() | moments(dataset.times) | moments(near_times))
    got = await cached.state_at(account_id, at=at, version=version)
    assert view(got) == view(await plain.state_at(account_id, at=at, version=version))


async def test_state_at_before_creation_and_bad_arguments(dataset: Dataset) -> None:
    queries = TemporalQueries(dataset.store, Account)
    first = dataset.streams["acc-04"][0].timestamp
    assert await queries.state_at("acc-04", at=first - MS) is None
    assert await queries.state_at("acc-04", version=0) is None
    assert await queries.state_at("nobody", at=first) is None
    current = await queries.state_at("acc-04")
    assert current is not None
    assert current.version == len(dataset.streams["acc-04"])
    with pytest.raises(ValueError, match="timezone-aware"):
        await queries.state_at("acc-04", at=datetime(2024, 3, 1))
    with pytest.raises(ValueError, match="version"):
        await queries.state_at("acc-04", version=-1)


async def test_a_later_event_with_an_earlier_timestamp_cuts_the_stream(store: EventStore) -> None:
    """State at T is always a prefix of the stream, even when timestamps go backwards."""
    t = [T0 + timedelta(seconds=s) for s in range(6)]
    balance = Decimal("0.00")
    events = [created(t[0]), NewEvent("account.activated", {}, timestamp=t[0])]
    for at, amount in [(t[1], "1.00"), (t[4], "2.00"), (t[2], "4.00"), (t[5], "8.00")]:
        balance += Decimal(amount)
        events.append(movement("credit", amount, balance, f"x{amount}", at))
    await store.append("account", "odd", events)
    queries = TemporalQueries(store, Account)
    state = await queries.state_at("odd", at=t[3])
    assert state is not None
    assert (state.version, state.balance) == (3, Decimal("1.00"))  # cut at v4 (t4 > t3)
    state = await queries.state_at("odd", at=t[4])
    assert state is not None
    assert (state.version, state.balance) == (5, Decimal("7.00"))
    (listed,) = [a async for a in queries.aggregates_at(t[3])]
    assert (listed.version, listed.balance) == (3, Decimal("1.00"))


# ---- aggregates_at ------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
async def test_aggregates_at_equals_state_at_of_each_aggregate(
    dataset: Dataset, data: st.DataObject
) -> None:
    queries = TemporalQueries(dataset.store, Account)
    at = data.draw(moments(dataset.times))
    got = {a.id: a.view() async for a in queries.aggregates_at(at)}
    expected = {}
    for account_id, events in dataset.streams.items():
        state = replay(prefix_at(events, at), account_id)
        if state is not None:
            expected[account_id] = state.view()
    assert got == expected


async def test_aggregates_at_filters_and_ignores_other_types(dataset: Dataset) -> None:
    dataset.store.registry.add(EventSchema("customer.created", "1.0", {"type": "object"}))
    await dataset.store.append("customer", "acc-02", [NewEvent("customer.created", {})])
    queries = TemporalQueries(dataset.store, Account)
    end = dataset.times[-1]
    everyone = [a async for a in queries.aggregates_at(end)]
    assert [a.id for a in everyone] == sorted(dataset.streams)
    active = [a.id async for a in queries.aggregates_at(end, {"status": AccountStatus.ACTIVE})]
    assert active == [a.id for a in everyone if a.status == AccountStatus.ACTIVE]
    rich = [a.id async for a in queries.aggregates_at(end, lambda a: a.balance > 100)]
    assert rich == [a.id for a in everyone if a.balance > 100]
    assert [a async for a in queries.aggregates_at(T0 - timedelta(days=1))] == []


async def test_aggregates_at_is_one_cursor_not_a_query_per_aggregate(
    dataset: Dataset, counted: tuple[FindCounter, AsyncDatabase[Document]]
) -> None:
    listener, db = counted
    queries = TemporalQueries(EventStore(db), Account, batch_size=10_000)
    found = [a async for a in queries.aggregates_at(dataset.times[-1])]
    assert len(found) == len(dataset.streams)
    # One cursor over the events, then one over the same range of the archive.
    assert listener.commands == ["find", "find"]


# ---- balance history ----------------------------------------------------------------


async def test_balance_history_in_decimal_with_opening_balance(store: EventStore) -> None:
    day = timedelta(days=1)
    events = [created(T0), NewEvent("account.activated", {}, timestamp=T0)]
    flows = [("credit", "100.10"), ("debit", "0.30"), ("credit", "0.20"), ("debit", "50.00")]
    balance = Decimal("0.00")
    for i, (kind, amount) in enumerate(flows, start=1):
        balance += Decimal(amount) if kind == "credit" else -Decimal(amount)
        events.append(movement(kind, amount, balance, f"tx{i}", T0 + i * day))
    events.append(NewEvent("account.frozen", {"reason": "audit"}, timestamp=T0 + 3 * day))
    await store.append("account", "h1", events)

    history = await balance_history(store, "h1", T0 + 2 * day, T0 + 3 * day)
    assert history.opening_balance == Decimal("100.10")
    assert [(p.kind, p.amount, p.balance, p.transaction_id) for p in history.points] == [
        ("debit", Decimal("0.30"), Decimal("99.80"), "tx2"),
        ("credit", Decimal("0.20"), Decimal("100.00"), "tx3"),
    ]
    assert all(
        isinstance(p.balance, Decimal) and isinstance(p.amount, Decimal) for p in history.points
    )
    assert history.closing_balance == Decimal("100.00")
    state = await TemporalQueries(store, Account).state_at("h1", at=T0 + 3 * day)
    assert state is not None
    assert state.balance == history.closing_balance

    whole = await balance_history(store, "h1", T0 - day, T0 + 10 * day)
    assert whole.opening_balance == Decimal("0.00")
    assert [p.balance for p in whole.points] == [
        Decimal("100.10"),
        Decimal("99.80"),
        Decimal("100.00"),
        Decimal("50.00"),
    ]
    after = await balance_history(store, "h1", T0 + 9 * day, T0 + 10 * day)
    assert (after.opening_balance, after.points) == (Decimal("50.00"), ())
    before = await balance_history(store, "h1", T0 - 3 * day, T0 - 2 * day)
    assert (before.opening_balance, before.points) == (Decimal("0.00"), ())

    with pytest.raises(AggregateNotFoundError):
        await balance_history(store, "nobody", T0, T0 + day)
    with pytest.raises(ValueError, match="after"):
        await balance_history(store, "h1", T0 + day, T0)


async def test_past_states_start_from_the_kept_history(dataset: Dataset) -> None:
    """A long stream's state at an old version starts from the snapshot kept for that band
    (snapshot_history), not from the first event; and equals the replay."""
    account_id = max(dataset.streams, key=lambda k: len(dataset.streams[k]))
    events = dataset.streams[account_id]
    assert len(events) >= 12
    snapshots = SnapshotStore(dataset.store.db, history_every=4)
    await snapshots.init()
    for version in range(3, len(events) + 1, 3):
        account = replay(events[:version], account_id)
        assert account is not None
        await snapshots.save("account", account_id, version, account.snapshot_state(), 1)
    plain = TemporalQueries(dataset.store, Account)
    cached = TemporalQueries(dataset.store, Account, snapshots=snapshots)
    for version in range(0, len(events) + 1):
        got = await cached.state_at(account_id, version=version)
        assert view(got) == view(await plain.state_at(account_id, version=version)), version
    for event in events:
        at = event.timestamp
        assert view(await cached.state_at(account_id, at=at)) == view(
            await plain.state_at(account_id, at=at)
        )
    # A kept snapshot is trusted as a cache: marking the one of band 2 (version 9, the
    # first saved at or above 8) shows that version 10 started from it.
    kept = await snapshots.history.find_one({"aggregateId": account_id, "version": 9})
    assert kept is not None
    await snapshots.history.update_one(
        {"_id": kept["_id"]}, {"$set": {"state.owner.name": "from the history"}}
    )
    started = await cached.state_at(account_id, version=10)
    assert started is not None and started.owner_name == "from the history"
    await snapshots.delete("account", account_id)
    assert await snapshots.history.count_documents({"aggregateId": account_id}) == 0
