"""Snapshots: the policy, the snapshot store's rules, and snapshot + tail == full replay."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import (
    Aggregate,
    DomainError,
    EventStore,
    Repository,
    SchemaRegistry,
    SnapshotStore,
    applies,
)
from esmongo.bank import (
    ACCOUNT_SCHEMAS,
    Account,
    AccountCommandHandler,
    ActivateAccount,
    CreateAccount,
    CreditAccount,
    DebitAccount,
)
from esmongo.codec import Document
from esmongo.model import EventLike
from esmongo.model.snapshots import crosses_interval

# ---- a small aggregate with snapshot support ------------------------------------------


class Tally(Aggregate):
    aggregate_type = "tally"
    schema_version = 1

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0
        self.marks: list[int] = []

    def mark(self, *values: int) -> None:
        for value in values:
            self.raise_event("tally.marked", {"value": value})

    @applies("tally.marked")
    def _marked(self, event: EventLike) -> None:
        self.total += event.data["value"]
        self.marks.append(event.data["value"])

    def snapshot_state(self) -> dict[str, Any]:
        # Hands out its own list on purpose: the repository must copy it at save time.
        return {"total": self.total, "marks": self.marks}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.total = state["total"]
        self.marks = list(state["marks"])


class TallyV2(Tally):
    """The same stream type after a change of the snapshot's shape."""

    schema_version = 2


class Unencodable(Tally):
    def snapshot_state(self) -> dict[str, Any]:
        return {"total": self.total, "marks": object()}  # BSON cannot encode this


class Unsnapshotable(Tally):
    def snapshot_state(self) -> dict[str, Any]:
        raise RuntimeError("no snapshot today")


@pytest.fixture
async def snapshots(db: AsyncDatabase[Document]) -> SnapshotStore:
    snapshots = SnapshotStore(db)
    await snapshots.init()
    return snapshots


def tallies(
    store: EventStore, snapshots: SnapshotStore, every: int = 5, cls: type[Tally] = Tally
) -> Repository[Tally]:
    return Repository(store, cls, snapshots=snapshots, snapshot_every=every)


async def save_marks(repo: Repository[Tally], tally_id: str, *values: int) -> Tally:
    tally = await repo.load_or_new(tally_id)
    tally.mark(*values)
    await repo.save(tally)
    await repo.drain()
    return tally


async def snapshot_version(snapshots: SnapshotStore, tally_id: str) -> int | None:
    snapshot = await snapshots.get("tally", tally_id)
    return snapshot.version if snapshot else None


# ---- policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "every", "crosses"),
    [
        (0, 4, 5, False),
        (4, 5, 5, True),
        (5, 6, 5, False),
        (3, 7, 5, True),  # a batch that jumps over a multiple
        (9, 21, 5, True),
        (0, 100, 0, False),  # 0: never
        (0, 1, 1, True),
    ],
)
def test_crosses_interval(old: int, new: int, every: int, crosses: bool) -> None:
    assert crosses_interval(old, new, every) is crosses


async def test_snapshot_policy_across_batches(store: EventStore, snapshots: SnapshotStore) -> None:
    repo = tallies(store, snapshots, every=5)
    await save_marks(repo, "t1", 1, 2, 3)
    assert await snapshot_version(snapshots, "t1") is None
    await save_marks(repo, "t1", 4, 5, 6, 7)  # 3 -> 7 jumps over 5
    assert await snapshot_version(snapshots, "t1") == 7
    await save_marks(repo, "t1", 8, 9)
    assert await snapshot_version(snapshots, "t1") == 7
    await save_marks(repo, "t1", 10)  # lands on 10
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert snapshot.version == 10
    assert snapshot.state == {"total": 55, "marks": list(range(1, 11))}
    assert snapshot.schema_version == 1
    assert snapshot.created_at.utcoffset() == timedelta(0)
    assert snapshot.expires_at is not None
    assert snapshot.expires_at - snapshot.created_at == timedelta(days=30)


async def test_no_snapshot_store_means_no_snapshots(
    store: EventStore, snapshots: SnapshotStore, db: AsyncDatabase[Document]
) -> None:
    await save_marks(Repository(store, Tally, snapshot_every=1), "t1", 1, 2)
    await save_marks(tallies(store, snapshots, every=0), "t2", 1, 2)
    assert await db["snapshots"].count_documents({}) == 0
    with pytest.raises(ValueError):
        await Repository(store, Tally).snapshot_all(0)


async def test_load_starts_from_the_snapshot(
    store: EventStore, snapshots: SnapshotStore, db: AsyncDatabase[Document]
) -> None:
    repo = tallies(store, snapshots, every=3)
    await save_marks(repo, "t1", 1, 2, 3)
    await save_marks(repo, "t1", 4)
    # Proof that the snapshot is read: doctor its state; the tail comes from the events.
    await db["snapshots"].update_one({"aggregateId": "t1"}, {"$set": {"state.total": 1000}})
    tally = await repo.load("t1")
    assert (tally.total, tally.marks, tally.version) == (1004, [1, 2, 3, 4], 4)
    plain = await Repository(store, Tally).load("t1")
    assert (plain.total, plain.version) == (10, 4)


async def test_snapshot_of_another_schema_version_is_ignored(
    store: EventStore, snapshots: SnapshotStore, db: AsyncDatabase[Document]
) -> None:
    await save_marks(tallies(store, snapshots, every=3), "t1", 1, 2, 3)
    await db["snapshots"].update_one({"aggregateId": "t1"}, {"$set": {"state.total": 1000}})
    tally = await tallies(store, snapshots, cls=TallyV2).load("t1")
    assert (tally.total, tally.version) == (6, 3)


async def test_unreadable_snapshot_falls_back_to_replay(
    store: EventStore,
    snapshots: SnapshotStore,
    db: AsyncDatabase[Document],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A snapshot is a cache: one that cannot be restored costs a full replay, not the load."""
    repo = tallies(store, snapshots, every=3)
    await save_marks(repo, "t1", 1, 2, 3)
    await db["snapshots"].update_one({"aggregateId": "t1"}, {"$unset": {"state.marks": ""}})
    with caplog.at_level(logging.ERROR, logger="esmongo.model.repository"):
        tally = await repo.load("t1")
    assert (tally.total, tally.marks, tally.version) == (6, [1, 2, 3], 3)
    assert any("tally/t1" in r.getMessage() for r in caplog.records)


async def test_snapshot_holds_the_state_of_the_save(
    store: EventStore, snapshots: SnapshotStore
) -> None:
    """Commands run after the save, before the background write, must not leak into it."""
    repo = tallies(store, snapshots, every=2)
    tally = await repo.load_or_new("t1")
    tally.mark(1, 2)
    await repo.save(tally)
    tally.mark(100)  # not saved
    await repo.drain()
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, {"total": 3, "marks": [1, 2]})


# ---- failures never fail the save -----------------------------------------------------


async def test_unencodable_state_fails_the_snapshot_not_the_save(
    store: EventStore, snapshots: SnapshotStore, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tallies(store, snapshots, every=2, cls=Unencodable)
    with caplog.at_level(logging.ERROR, logger="esmongo.model.repository"):
        tally = await save_marks(repo, "t1", 1, 2, 3)
    assert tally.version == 3
    assert await store.stream_version("tally", "t1") == 3
    assert await snapshot_version(snapshots, "t1") is None
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "snapshot of tally/t1 failed" in record.getMessage()
    assert record.exc_info is not None


async def test_failing_snapshot_state_fails_the_snapshot_not_the_save(
    store: EventStore, snapshots: SnapshotStore, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tallies(store, snapshots, every=2, cls=Unsnapshotable)
    with caplog.at_level(logging.ERROR, logger="esmongo.model.repository"):
        tally = await save_marks(repo, "t1", 1, 2, 3)
    assert (tally.version, tally.uncommitted_events) == (3, [])
    assert await store.stream_version("tally", "t1") == 3
    assert await snapshot_version(snapshots, "t1") is None
    assert any("tally/t1" in r.getMessage() for r in caplog.records)


# ---- the snapshot store ---------------------------------------------------------------


async def test_newer_snapshot_is_never_replaced_by_an_older_one(snapshots: SnapshotStore) -> None:
    assert await snapshots.save("tally", "t1", 10, {"v": 10}, 1) is True
    assert await snapshots.save("tally", "t1", 5, {"v": 5}, 1) is False
    assert await snapshots.save("tally", "t1", 10, {"v": "again"}, 1) is False
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (10, {"v": 10})
    assert await snapshots.save("tally", "t1", 11, {"v": 11}, 1) is True
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (11, {"v": 11})
    # One snapshot per aggregate; another aggregate is independent.
    assert await snapshots.save("tally", "t2", 1, {"v": 1}, 1) is True
    assert await snapshots.save("other", "t1", 1, {"v": 1}, 1) is True
    assert await snapshots.collection.count_documents({}) == 3


async def test_snapshot_of_another_schema_version_is_replaced(snapshots: SnapshotStore) -> None:
    """After a schema bump the old snapshot is dead weight: a new one replaces it."""
    assert await snapshots.save("tally", "t1", 10, {"old": True}, 1)
    assert await snapshots.save("tally", "t1", 8, {"new": True}, 2) is True
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version, snapshot.state) == (8, 2, {"new": True})
    assert await snapshots.save("tally", "t1", 7, {"older": True}, 2) is False


async def test_older_schema_never_overwrites_a_newer_schemas_snapshot(
    store: EventStore, snapshots: SnapshotStore
) -> None:
    """Two processes on one database, one deployed with the new snapshot shape: the one
    still on the old code must not replace the new code's snapshot, however far it gets."""
    new_code = tallies(store, snapshots, every=2, cls=TallyV2)
    old_code = tallies(store, snapshots, every=2, cls=Tally)
    await save_marks(new_code, "t1", 1, 2)
    await save_marks(old_code, "t1", 3, 4)  # version 4 > 2, but schema 1 < 2
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (2, 2)
    assert await snapshots.save("tally", "t1", 99, {"old": True}, 1) is False
    assert await old_code.snapshot_all(1) == 0
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version, snapshot.state["total"]) == (2, 2, 3)
    # The new code goes on replacing its own, and loads right from it.
    await save_marks(new_code, "t1", 5, 6)
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version, snapshot.state["total"]) == (6, 2, 21)
    assert (await new_code.load("t1")).total == 21
    # A snapshot written before schema versions were recorded reads as schema 0.
    await snapshots.collection.update_one({"aggregateId": "t1"}, {"$unset": {"schemaVersion": ""}})
    assert await snapshots.save("tally", "t1", 3, {"v": 1}, 1) is True


async def test_snapshot_store_document_and_indexes(
    db: AsyncDatabase[Document], snapshots: SnapshotStore
) -> None:
    await snapshots.save("account", "a1", 3, {"balance": Decimal("1.10")}, 1)
    doc = await db["snapshots"].find_one({})
    assert doc is not None
    assert doc["eventCount"] == 3
    assert doc["schemaVersion"] == 1
    assert doc["state"]["balance"] == Decimal("1.10")
    indexes = await db["snapshots"].index_information()
    assert indexes["aggregate_unique"]["unique"] is True
    assert indexes["ttl"]["expireAfterSeconds"] == 0
    await snapshots.delete("account", "a1")
    assert await snapshots.get("account", "a1") is None
    forever = SnapshotStore(db, retention=None)
    await forever.save("account", "a2", 1, {}, 1)
    kept = await forever.get("account", "a2")
    assert kept is not None
    assert kept.expires_at is None


async def test_snapshot_all_with_min_events(store: EventStore, snapshots: SnapshotStore) -> None:
    plain = Repository(store, Tally)  # writes no snapshot itself
    for tally_id, n in [("a", 2), ("b", 5), ("c", 8)]:
        await save_marks(plain, tally_id, *range(1, n + 1))
    await save_marks(Repository(store, Cartless), "b", 1)  # another type: not counted
    repo = tallies(store, snapshots, every=1000)
    progress: list[tuple[int, int]] = []
    assert await repo.snapshot_all(5, lambda done, total: progress.append((done, total))) == 2
    assert progress == [(1, 2), (2, 2)]
    assert await snapshot_version(snapshots, "a") is None
    assert await snapshot_version(snapshots, "b") == 5
    c = await snapshots.get("tally", "c")
    assert c is not None
    assert (c.version, c.state["total"]) == (8, 36)
    # Nothing new: nothing written. One more event on "a" brings it in.
    assert await repo.snapshot_all(5) == 0
    assert await repo.snapshot_all(1) == 1
    assert await snapshot_version(snapshots, "a") == 2


async def test_snapshot_all_after_a_schema_bump_rewrites_old_snapshots(
    store: EventStore, snapshots: SnapshotStore
) -> None:
    await save_marks(tallies(store, snapshots, every=4), "t1", 1, 2, 3, 4)
    bumped = tallies(store, snapshots, every=4, cls=TallyV2)
    assert await bumped.snapshot_all(1) == 1
    snapshot = await snapshots.get("tally", "t1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (4, 2)


class Cartless(Tally):
    aggregate_type = "not_a_tally"


# ---- snapshot + tail == full replay (property) ---------------------------------------

AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
MOVES = st.tuples(st.sampled_from(["credit", "debit"]), AMOUNTS)
STATUS = st.sampled_from(["freeze", "unfreeze", "activate", "close"])
ACTION = st.one_of(MOVES, STATUS.map(lambda kind: (kind, None)))
Action = tuple[str, Decimal | None]
# A step is either one unit of work on the aggregate (several actions, one save: it may
# jump over a snapshot multiple), or one command through the handler, whose transaction
# id comes from a small pool so that retries and reused ids happen.
STEPS = st.one_of(
    st.lists(ACTION, min_size=1, max_size=5).map(lambda actions: ("batch", actions)),
    st.tuples(MOVES, st.integers(0, 3)).map(lambda move: ("command", move)),
)


def act(account: Account, action: Action) -> None:
    kind, amount = action
    try:
        match kind:
            case "credit":
                account.credit(amount, uuid.uuid4().hex)
            case "debit":
                account.debit(amount, uuid.uuid4().hex)
            case "freeze":
                account.freeze("checks")
            case "unfreeze":
                account.unfreeze()
            case "activate":
                account.activate()
            case "close":
                account.close()
    except DomainError:
        pass  # refused: no event, as the rules say


@pytest.fixture
async def account_store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db, registry=SchemaRegistry(ACCOUNT_SCHEMAS, strict=True))
    await store.init()
    await SnapshotStore(db).init()
    return store


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    every=st.integers(min_value=1, max_value=7),
    steps=st.lists(STEPS, min_size=1, max_size=8),
)
async def test_snapshot_plus_tail_equals_full_replay(
    account_store: EventStore, every: int, steps: list[tuple[str, Any]]
) -> None:
    snapshots = SnapshotStore(account_store.db)
    with_snapshots = Repository(account_store, Account, snapshots=snapshots, snapshot_every=every)
    without = Repository(account_store, Account)
    handler = AccountCommandHandler(with_snapshots)
    account_id = f"acc_{uuid.uuid4().hex}"
    opened = await handler.handle(CreateAccount(account_id, "owner", "Owner", "EUR"))
    assert opened.success
    assert (await handler.handle(ActivateAccount(account_id))).success
    await with_snapshots.drain()
    crossed_at = 2 if every <= 2 else None
    for step, payload in steps:
        before = await account_store.stream_version("account", account_id)
        if step == "batch":
            account = await with_snapshots.load(account_id)
            for action in payload:
                act(account, action)
            await with_snapshots.save(account)
        else:
            (kind, amount), txn = payload
            command = CreditAccount if kind == "credit" else DebitAccount
            result = await handler.handle(command(account_id, amount, f"txn-{txn}"))
            assert result.success or isinstance(result.error, DomainError)
        await with_snapshots.drain()
        after = await account_store.stream_version("account", account_id)
        if crosses_interval(before, after, every):
            crossed_at = after
        # The snapshot is the one written by the last save that crossed a multiple.
        snapshot = await snapshots.get("account", account_id)
        assert (snapshot.version if snapshot else None) == crossed_at
        from_snapshot = await with_snapshots.load(account_id)
        replayed = await without.load(account_id)
        assert from_snapshot.version == replayed.version == after
        assert from_snapshot.snapshot_state() == replayed.snapshot_state()
        assert from_snapshot.view() == replayed.view()
        assert from_snapshot.balance >= 0
