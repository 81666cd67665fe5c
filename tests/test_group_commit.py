"""Group commit: concurrent appends share transactions, a conflict fails only its own caller,
and the global sequence stays gap-free, unique and visible in commit order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import (
    ANY,
    NO_STREAM,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from esmongo.codec import Document
from esmongo.errors import DuplicateEventError
from esmongo.events import Expected, StreamId
from esmongo.store.group_commit import GroupCommit


async def new_store(db: AsyncDatabase[Document], **options: Any) -> EventStore:
    store = EventStore(db, **options)
    await store.init()
    return store


def one(n: int = 0, event_id: str | None = None) -> list[NewEvent]:
    if event_id is None:
        return [NewEvent("thing.happened", {"n": n})]
    return [NewEvent("thing.happened", {"n": n}, event_id=event_id)]


async def everything(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read_all()]


def assert_invariants(recorded: list[RecordedEvent]) -> None:
    """Sequences 1..N once each; per stream, versions 1..n once each, in sequence order."""
    assert [e.sequence for e in recorded] == list(range(1, len(recorded) + 1))
    streams: dict[tuple[str, str], list[int]] = {}
    for event in recorded:  # read_all returns them by sequence
        streams.setdefault((event.aggregate_type, event.aggregate_id), []).append(
            event.aggregate_version
        )
    for versions in streams.values():
        assert versions == list(range(1, len(versions) + 1))
    assert len({e.event_id for e in recorded}) == len(recorded)


# ---- the batching alone (no database): how batches form ---------------------------------


@dataclass(eq=False)
class Item:
    keys: frozenset[Hashable]
    count: int = 1
    size: int = 10
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Recorder:
    """A flush that records its batches and answers them, after one loop turn or on demand."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def flush(self, batch: list[Item]) -> None:
        self.batches.append(batch)
        await self.release.wait()
        for item in batch:
            item.future.set_result(len(self.batches))


def item(*keys: str, count: int = 1, size: int = 10) -> Item:
    return Item(frozenset(keys), count, size)


async def test_a_lone_append_goes_straight_through() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, max_events=100, max_bytes=10_000)
    lone = item("a")
    group.submit(lone)
    assert await asyncio.wait_for(lone.future, 1) == 1
    assert [len(b) for b in recorder.batches] == [1]


async def test_appends_queued_while_a_batch_is_written_form_the_next_batch() -> None:
    recorder = Recorder()
    recorder.release.clear()
    group = GroupCommit(recorder.flush, max_events=100, max_bytes=10_000)
    first = item("a")
    group.submit(first)
    await asyncio.sleep(0)  # the leader takes `first` and waits in flush
    later = [item(f"s{i}") for i in range(5)]
    for pending in later:
        group.submit(pending)
    assert group.queued == 5
    recorder.release.set()
    assert await asyncio.gather(first.future, *(p.future for p in later)) == [1] + [2] * 5
    assert [len(b) for b in recorder.batches] == [1, 5]


async def test_one_stream_twice_goes_in_two_batches_in_order() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, max_events=100, max_bytes=10_000)
    a1, b, a2, c = item("a"), item("b"), item("a", "x"), item("c")
    for pending in (a1, b, a2, c):
        group.submit(pending)
    assert await asyncio.gather(a1.future, b.future, a2.future, c.future) == [1, 1, 2, 1]
    assert recorder.batches == [[a1, b, c], [a2]]


async def test_batches_are_bounded_by_events_and_bytes() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.flush, max_events=4, max_bytes=100)
    items = [item(f"s{i}", count=2) for i in range(5)] + [item("big", count=9)]
    items += [item("heavy1", size=60), item("heavy2", size=60)]
    for pending in items:
        group.submit(pending)
    await asyncio.gather(*(p.future for p in items))
    assert [sum(i.count for i in b) for b in recorder.batches][:3] == [4, 4, 2]
    big = next(b for b in recorder.batches if items[5] in b)
    assert big == [items[5]]  # too big for any batch: it goes alone
    assert all(sum(i.size for i in b) <= 100 or len(b) == 1 for b in recorder.batches)


async def test_a_failed_flush_fails_its_batch_only_and_cancelled_appends_are_skipped() -> None:
    batches: list[list[Item]] = []

    async def flush(batch: list[Item]) -> None:
        batches.append(batch)
        if len(batches) == 1:
            raise RuntimeError("server gone")
        for pending in batch:
            pending.future.set_result("ok")

    group = GroupCommit(flush, max_events=1, max_bytes=10_000)
    first, gone, last = item("a"), item("b"), item("c")
    for pending in (first, gone, last):
        group.submit(pending)
    gone.future.cancel()
    with pytest.raises(RuntimeError, match="server gone"):
        await first.future
    assert await last.future == "ok"
    assert batches == [[first], [last]]


def test_a_leader_left_behind_by_a_closed_loop_does_not_block_the_next_one() -> None:
    """A store used from a second event loop (the first closed mid-batch) keeps working."""
    batches: list[list[Item]] = []

    async def flush(batch: list[Item]) -> None:
        batches.append(batch)
        if len(batches) == 1:
            await asyncio.Event().wait()  # stuck until its loop is closed
        for pending in batch:
            pending.future.set_result(len(batches))

    group = GroupCommit(flush, max_events=100, max_bytes=10_000)

    async def stuck() -> None:
        group.submit(item("a"))
        await asyncio.sleep(0.01)  # the leader is now waiting in flush

    old = asyncio.new_event_loop()
    old.run_until_complete(stuck())
    old.close()  # without cancelling the leader: it stays pending forever

    async def append_again() -> Any:
        fresh = item("b")
        group.submit(fresh)
        return await asyncio.wait_for(fresh.future, 2)

    assert asyncio.run(append_again()) == 2
    assert [[i.keys for i in b] for b in batches] == [[frozenset({"a"})], [frozenset({"b"})]]


# ---- the store: conflicts fail alone --------------------------------------------------


async def test_a_batch_in_which_one_stream_conflicts_commits_the_others(
    db: AsyncDatabase[Document],
) -> None:
    store = await new_store(db)
    for name in "abcde":
        await store.append("t", name, one(), NO_STREAM)
    before = (store.stats.transactions, store.stats.taken_out)
    expectations: dict[str, Expected] = {"a": 1, "b": NO_STREAM, "c": 5, "d": 1, "e": 1}
    # Started in one loop turn, so all five are queued before the batch forms.
    results = await asyncio.gather(
        *(store.append("t", name, one(1), exp) for name, exp in expectations.items()),
        return_exceptions=True,
    )
    outcome = dict(zip(expectations, results, strict=True))
    for name in "ade":
        recorded = outcome[name]
        assert isinstance(recorded, list)
        assert recorded[0].aggregate_version == 2
    assert sorted(e[0].sequence for n, e in outcome.items() if n in "ade") == [6, 7, 8]
    for name, expected in (("b", NO_STREAM), ("c", 5)):
        error = outcome[name]
        assert isinstance(error, ConcurrencyError)
        assert (error.stream, error.expected, error.actual) == (StreamId("t", name), expected, 1)
    # b passed the version check (nothing to check for NO_STREAM) and was caught by the
    # unique index inside the transaction, which went again without it; c was caught before.
    assert store.stats.transactions - before[0] == 1
    assert store.stats.taken_out - before[1] == 1
    assert_invariants(await everything(store))


@pytest.mark.parametrize("group_commit", [True, False])
async def test_appends_to_one_stream_started_together_have_exactly_one_winner(
    db: AsyncDatabase[Document], group_commit: bool
) -> None:
    store = await new_store(db, group_commit=group_commit)
    await store.append("t", "s", one(), NO_STREAM)
    results = await asyncio.gather(
        *(store.append("t", "s", one(i), 1) for i in range(6)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, list)]
    assert len(winners) == 1
    assert all(
        isinstance(r, ConcurrencyError) and r.actual == 2 for r in results if r not in winners
    )
    assert_invariants(await everything(store))


async def test_a_later_append_to_a_stream_in_the_same_batch_sees_the_earlier_one(
    db: AsyncDatabase[Document],
) -> None:
    store = await new_store(db)
    first, second, third = await asyncio.gather(
        store.append("t", "s", one(1), NO_STREAM),
        store.append("t", "s", one(2), 1),
        store.append("t", "s", one(3), ANY),
    )
    assert [first[0].aggregate_version, second[0].aggregate_version] == [1, 2]
    assert third[0].aggregate_version == 3
    assert_invariants(await everything(store))


async def test_a_retry_queued_with_its_original_returns_the_recorded_events(
    db: AsyncDatabase[Document],
) -> None:
    store = await new_store(db)
    events = one(7, event_id="evt-once")
    first, again, other = await asyncio.gather(
        store.append("t", "s", events, NO_STREAM),
        store.append("t", "s", events, NO_STREAM),
        store.append("t", "other", one(), NO_STREAM),
    )
    assert again == first
    assert other[0].aggregate_id == "other"
    assert len(await everything(store)) == 2


async def test_one_event_id_on_two_streams_in_one_batch_records_it_once(
    db: AsyncDatabase[Document],
) -> None:
    store = await new_store(db)
    results = await asyncio.gather(
        store.append("t", "s1", one(event_id="evt-shared"), NO_STREAM),
        store.append("t", "s2", one(event_id="evt-shared"), NO_STREAM),
        store.append("t", "s3", one(), NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(results[0], list) and isinstance(results[2], list)
    assert isinstance(results[1], DuplicateEventError)
    assert_invariants(await everything(store))


async def test_a_multi_stream_append_fails_whole_when_one_of_its_streams_conflicts(
    db: AsyncDatabase[Document],
) -> None:
    store = await new_store(db)
    await store.append("acct", "a", one(), NO_STREAM)
    transfer = [
        AppendRequest("acct", "a", one(1), 1),
        AppendRequest("acct", "b", one(1), 3),  # b does not exist: conflict
    ]
    results = await asyncio.gather(
        store.append_streams(transfer),
        store.append("acct", "c", one(), NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(results[0], ConcurrencyError) and results[0].stream == StreamId("acct", "b")
    assert isinstance(results[1], list)
    assert await store.stream_version("acct", "a") == 1
    assert_invariants(await everything(store))


async def test_any_appends_from_two_stores_race_and_all_land(
    db: AsyncDatabase[Document],
) -> None:
    """Two stores stand for two processes: their batches conflict with each other."""
    left, right = await new_store(db), await new_store(db)
    await asyncio.gather(
        *(left.append("t", "hot", one(i), ANY) for i in range(15)),
        *(right.append("t", "hot", one(i), ANY) for i in range(15)),
        *(right.append("t", f"cold{i}", one(i), NO_STREAM) for i in range(10)),
    )
    recorded = await everything(left)
    assert len(recorded) == 40
    assert_invariants(recorded)


@pytest.mark.parametrize("log", ["events", "app_events"])
async def test_a_remembered_version_is_checked_against_the_database(
    db: AsyncDatabase[Document], log: str
) -> None:
    """The store remembers streams it wrote; if their events vanish it must not trust that.
    `app_events`: a log numbered by its own counter (an eventsourcing application's), whose
    generation is on that counter."""
    options: dict[str, Any] = {} if log == "events" else {"collection": log, "sequence": log}
    store = await new_store(db, **options)
    await store.append("t", "s", one(1) + one(2), NO_STREAM)
    await db.drop_collection(log)
    await store.init()
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("t", "s", one(3), 2)
    assert caught.value.actual == 0
    assert await everything(store) == []
    await (await new_store(db, **options)).append("t", "s", one(1), NO_STREAM)
    assert await store.stream_version("t", "s") == 1  # below what it remembered
    (event,) = await store.append("t", "s", one(2), 1)
    assert event.aggregate_version == 2


async def test_a_remembered_version_survives_no_drop_of_the_whole_database(
    db: AsyncDatabase[Document],
) -> None:
    """The database dropped under a live store (counter and all) and written again by
    another: the new counter must not look like the one the store trusted its heads by."""
    store = await new_store(db)
    await store.append("t", "s", one(1) + one(2), NO_STREAM)
    await db.client.drop_database(db.name)
    await (await new_store(db)).append("t", "s", one(1), NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("t", "s", one(3), 2)
    assert caught.value.actual == 1
    assert [e.aggregate_version for e in await everything(store)] == [1]


async def test_batch_bounds_hold_against_the_database(db: AsyncDatabase[Document]) -> None:
    store = await new_store(db, max_batch_events=3)
    await asyncio.gather(*(store.append("t", f"s{i}", one(), NO_STREAM) for i in range(10)))
    assert store.stats.transactions == 4  # 3 + 3 + 3 + 1
    assert_invariants(await everything(store))


# ---- the invariants under load --------------------------------------------------------

WRITERS = 200
STREAMS = 60


async def test_200_writers_with_conflicts_keep_the_sequence_and_one_winner_per_version(
    db: AsyncDatabase[Document],
) -> None:
    """Writers share streams on purpose (conflicts), while a reader checks commit order.

    Each writer appends a few times to a random stream at the version it last saw, some
    with NO_STREAM or ANY. Every success is a claim on (stream, version): claims must be
    unique and must be exactly what the store holds. The reader follows the global order by
    sequence the way a projection does and must never see a hole that fills later.
    """
    store = await new_store(db)
    other = await new_store(db)  # a second "process" on the same database
    rng = random.Random(6)
    claims: list[tuple[str, int, int]] = []
    conflicts = 0
    done = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal conflicts
        target = store if w % 4 else other
        for _ in range(3):
            stream = f"s{rng.randrange(STREAMS)}"
            mode = rng.random()
            expected: Expected
            if mode < 0.1:
                expected = ANY
            elif mode < 0.2:
                expected = NO_STREAM
            else:
                expected = await target.stream_version("t", stream) or NO_STREAM
            await asyncio.sleep(rng.random() * 0.02)
            try:
                (event,) = await target.append("t", stream, one(w), expected)
            except ConcurrencyError:
                conflicts += 1
                continue
            claims.append((stream, event.aggregate_version, event.sequence))

    async def reader() -> int:
        """Catch up by sequence repeatedly; what it saw must never gain a lower number."""
        checkpoint = 0
        reads = 0
        while not done.is_set() or checkpoint < await store.head_sequence():
            batch = [e.sequence async for e in store.read_all(after_sequence=checkpoint)]
            assert batch == list(range(checkpoint + 1, checkpoint + 1 + len(batch)))
            checkpoint += len(batch)
            reads += 1
            await asyncio.sleep(0.005)
        return checkpoint

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    done.set()
    seen = await reading

    recorded = await everything(store)
    assert_invariants(recorded)
    assert seen == len(recorded) == await store.head_sequence()
    stored = sorted((e.aggregate_id, e.aggregate_version, e.sequence) for e in recorded)
    assert sorted(claims) == stored  # every success is stored, once; nothing else is
    assert len({(s, v) for s, v, _ in claims}) == len(claims)  # one winner per version
    assert conflicts > 0, "the test meant to provoke conflicts"
    group = store.stats
    assert group.transactions < group.appends, "concurrent appends should have shared commits"
