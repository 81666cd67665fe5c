"""The projections of one daemon commit their batches in one shared transaction; when it
fails, each batch is committed again on its own and gets its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.bank import bank_projections
from esmongo.projections import Checkpoints, DeadLetters, ProjectionDaemon, RunnerOptions
from esmongo.projections.checkpoints import Advance
from esmongo.projections.commit_group import PAUSE_POINTS, CommitGroup
from esmongo.projections.errors import CommitInterrupted
from projection_helpers import all_events, assert_same, fold, loaded_store, read_models

Db = AsyncDatabase[dict[str, Any]]


async def test_live_batches_of_the_three_read_models_share_one_transaction(db: Db) -> None:
    store, load = await loaded_store(db, 200, synthetic_time=False)
    daemon = ProjectionDaemon(store, bank_projections(), RunnerOptions(batch_size=100))
    daemon.start()
    try:
        await daemon.wait_until(await store.head_sequence(), timeout_s=60)
        before = (daemon.group.batches, daemon.group.transactions)
        for _ in range(15):
            await load.append(3)
            await daemon.wait_until(await store.head_sequence(), timeout_s=30)
        batches = daemon.group.batches - before[0]
        transactions = daemon.group.transactions - before[1]
        assert_same(fold(await all_events(store)), await read_models(db))
    finally:
        await daemon.stop()
    # Each wake-up gives the three a batch; most commits carry all three.
    assert batches >= 3 * 15
    assert transactions <= batches / 2, (batches, transactions)
    assert daemon.group.fallbacks == 0


async def test_a_batch_the_server_refuses_does_not_hold_back_the_others(db: Db) -> None:
    """A squatter document makes transactions_read's insert fail: the shared transaction
    aborts, the other read models commit on their own, transactions_read isolates the
    event in a dead letter, and every read model still equals the fold."""
    store, _load = await loaded_store(db, 120, synthetic_time=False)
    credit = next(e for e in await all_events(store) if e.event_type == "account.credited")
    projections = bank_projections()
    for projection in projections:
        projection.retry_backoff_s = 0.01
    daemon = ProjectionDaemon(store, projections, RunnerOptions(batch_size=500))
    daemon.group.max_wait_s = 10.0

    async def all_three_read() -> None:
        """The first leader waits until every runner has read its batch, so that the
        first batches share one transaction however the machine schedules the runners
        (a loaded machine once let the first runner lead before the others had read)."""
        del PAUSE_POINTS["lead"]
        while daemon.group.busy < len(projections):  # noqa: ASYNC110 - a test hook polling
            await asyncio.sleep(0.005)

    await daemon.init()
    await db["transactions_read"].insert_one({"_id": credit.event_id, "squatter": True})
    PAUSE_POINTS["lead"] = all_three_read
    daemon.start()
    try:
        await daemon.wait_until(await store.head_sequence(), timeout_s=60)
    finally:
        PAUSE_POINTS.pop("lead", None)
        await daemon.stop()
    assert daemon.group.fallbacks >= 1
    (letter,) = await DeadLetters(db).find("transactions_read")
    assert letter.sequence == credit.sequence
    expected = fold(await all_events(store))
    stored = await read_models(db)
    del expected["transactions_read"][credit.event_id], stored["transactions_read"][credit.event_id]
    assert_same(expected, stored)


async def test_a_lost_fence_fails_only_its_own_batch(db: Db) -> None:
    store, load = await loaded_store(db, 60, synthetic_time=False)
    daemon = ProjectionDaemon(store, bank_projections(), RunnerOptions(batch_size=100))
    daemon.start()
    try:
        await daemon.wait_until(await store.head_sequence(), timeout_s=60)
        victim = daemon.runner("transactions_read")
        old_fence = victim._fence
        # As if another process had taken the lease over: the fence moves past the runner's.
        await Checkpoints(db).raise_fence("transactions_read", old_fence + 1)
        fallbacks = daemon.group.fallbacks
        await load.append(10)
        head = await store.head_sequence()
        for name in ("accounts_read", "analytics_hourly"):
            await daemon.runner(name).wait_until(head, timeout_s=30)
        assert daemon.group.fallbacks > fallbacks  # the shared one failed, the others went on
    finally:
        await daemon.stop()
    checkpoint = await Checkpoints(db).get("transactions_read")
    assert checkpoint is not None and checkpoint.fence > old_fence


class Member:
    """A stand-in runner: a real session and checkpoint, at position 0 under fence 1."""

    def __init__(self, store: EventStore, name: str) -> None:
        self.name = name
        self.checkpoints = Checkpoints(store.db)
        self._session = store.db.client.start_session()

    def session(self) -> Any:
        return self._session

    async def ready(self) -> Member:
        await self.checkpoints.raise_fence(self.name, 1)
        return self

    def stay(self) -> Advance:
        return self.checkpoints.advance(self.name, fence=1, expected=0, position=0)


async def test_a_leader_cancelled_while_gathering_withdraws_and_another_leads(db: Db) -> None:
    store, _load = await loaded_store(db, 10, synthetic_time=False)
    group = CommitGroup(max_wait_s=5.0)
    leader, other, slow = [await Member(store, n).ready() for n in ("leader", "other", "slow")]
    wrote: list[str] = []

    def writer(name: str) -> Any:
        async def write(_session: Any) -> int:
            wrote.append(name)
            return len(name)

        return write

    with group.stepping(slow):  # the leader waits for it...
        leading = asyncio.create_task(group.commit(leader, leader.stay(), writer("leader")))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(group.commit(other, other.stay(), writer("other")))
        await asyncio.sleep(0.05)
        leading.cancel()  # ...and is cancelled while it waits
        await asyncio.sleep(0.05)
    assert await waiting == len("other")
    assert leading.cancelled() and wrote == ["other"]  # the withdrawn batch was not written
    for member in (leader, other, slow):
        await member.session().end_session()


async def test_a_leader_cancelled_during_the_transaction_leaves_no_one_waiting(db: Db) -> None:
    store, _load = await loaded_store(db, 10, synthetic_time=False)
    group = CommitGroup(max_wait_s=5.0)
    leader, other, slow = [await Member(store, n).ready() for n in ("leader", "other", "slow")]
    started = asyncio.Event()

    async def stuck(_session: Any) -> int:
        started.set()
        await asyncio.Event().wait()
        return 0

    async def write(_session: Any) -> int:
        return 1

    with group.stepping(slow):  # holds the leader until the other one has joined
        leading = asyncio.create_task(group.commit(leader, leader.stay(), stuck))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(group.commit(other, other.stay(), write))
        await asyncio.sleep(0.05)
    await asyncio.wait_for(started.wait(), 5)
    leading.cancel()
    try:
        await asyncio.wait_for(waiting, 5)
    except CommitInterrupted:
        pass
    else:
        raise AssertionError("a member of an interrupted transaction must be told")
    assert leading.cancelled()
    assert await group.commit(other, other.stay(), write) == 1  # the group still works
    for member in (leader, other, slow):
        await member.session().end_session()
