"""Appends that number their own stream versions, and logs numbered by their own sequence:
what the `eventsourcing` persistence module (esmongo.eventsourcing) needs of the store."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import EventStore, NewEvent
from esmongo.codec import Document
from esmongo.errors import ConcurrencyError
from esmongo.store import AppendRequest


def _events(n: int) -> list[NewEvent]:
    return [NewEvent("thing.made", {"n": i}) for i in range(n)]


async def test_versions_as_given_are_recorded_with_their_gaps(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db)
    await store.init()
    request = AppendRequest("thing", "t1", _events(3), versions=[0, 1, 5])
    (recorded,) = await store.append_streams([request])
    assert [e.aggregate_version for e in recorded] == [0, 1, 5]
    assert [e.sequence for e in recorded] == [1, 2, 3]
    read = [e.aggregate_version async for e in store.read_stream("thing", "t1", 0)]
    assert read == [0, 1, 5]


async def test_a_version_taken_is_a_conflict_and_writes_nothing(
    db: AsyncDatabase[Document],
) -> None:
    store = EventStore(db)
    await store.init()
    await store.append_streams([AppendRequest("thing", "t1", _events(1), versions=[1])])
    taken = AppendRequest("thing", "t1", _events(2), versions=[2, 1])
    with pytest.raises(ConcurrencyError):
        await store.append_streams([taken])
    twice = AppendRequest("thing", "t1", _events(2), versions=[2, 2])
    with pytest.raises(ConcurrencyError):
        await store.append_streams([twice])
    assert [e.aggregate_version async for e in store.read_stream("thing", "t1")] == [1]
    assert await store.head_sequence() == 1, "a failed append took sequence numbers"


async def test_versions_as_given_read_nothing_before_the_transaction(
    counted: tuple[FindCounter, AsyncDatabase[Document]],
) -> None:
    listener, db = counted
    store = EventStore(db)
    await store.init()
    listener.commands.clear()
    await store.append_streams([AppendRequest("thing", "t1", _events(2), versions=[1, 2])])
    await store.append_streams([AppendRequest("thing", "t2", _events(1), versions=[7])])
    assert listener.commands == [], "the unique index alone should check given versions"


async def test_concurrent_appends_with_the_same_given_version_one_wins(
    db: AsyncDatabase[Document],
) -> None:
    store = EventStore(db)
    await store.init()
    requests = [AppendRequest("thing", "t1", _events(1), versions=[1]) for _ in range(5)]
    results = await asyncio.gather(
        *(store.append_streams([r]) for r in requests), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert await store.head_sequence() == 1


@pytest.mark.parametrize(
    ("versions", "expected", "message"),
    [
        ([1], 0, "expected_version ANY"),
        ([1, 2], None, "2 versions given for 1 events"),
        ([-1], None, "must be an int >= 0"),
        (["1"], None, "must be an int >= 0"),
    ],
)
async def test_bad_given_versions_are_refused_before_writing(
    db: AsyncDatabase[Document], versions: list[object], expected: int | None, message: str
) -> None:
    store = EventStore(db)
    await store.init()
    kwargs = {} if expected is None else {"expected_version": expected}
    request = AppendRequest("thing", "t1", _events(1), versions=versions, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        await store.append_streams([request])
    assert await store.head_sequence() == 0


async def test_logs_with_their_own_sequence_number_apart_in_one_database(
    db: AsyncDatabase[Document],
) -> None:
    main = EventStore(db)
    first = EventStore(db, collection="app1_events", sequence="app1_events")
    second = EventStore(db, collection="app2_events", sequence="app2_events")
    for store in (main, first, second):
        await store.init()
    await main.append("thing", "m", _events(2))
    await first.append("thing", "a", _events(3))
    await second.append("thing", "b", _events(1))
    await first.append("thing", "a2", _events(1))
    assert [e.sequence async for e in first.read_all()] == [1, 2, 3, 4]
    assert [e.sequence async for e in second.read_all()] == [1]
    assert [e.sequence async for e in main.read_all()] == [1, 2]
    assert (await main.head_sequence(), await first.head_sequence()) == (2, 4)
    assert await second.head_sequence() == 1
    counts = [await store.event_counts() for store in (main, first, second)]
    assert counts == [(2, 0), (4, 0), (1, 0)], "each log counts by its own sequence"
    with pytest.raises(ValueError, match="archiving is for the database's main log"):
        await first.archive_stream("thing", "a")
