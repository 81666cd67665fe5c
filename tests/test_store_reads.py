"""The event store's read paths, and what values look like after a round trip."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent, RecordedEvent
from esmongo.codec import Document

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db)
    await store.init()
    return store


async def fill(store: EventStore, streams: int, per_stream: int) -> list[RecordedEvent]:
    """Interleaved appends: stream i gets event k at sequence k * streams + i + 1."""
    recorded: list[RecordedEvent] = []
    for k in range(per_stream):
        for i in range(streams):
            recorded += await store.append("t", f"s{i}", [NewEvent("t.happened", {"k": k})])
    return recorded


async def test_head_sequence(store: EventStore) -> None:
    assert await store.head_sequence() == 0
    await fill(store, 2, 3)
    assert await store.head_sequence() == 6


async def test_head_sequence_before_init(db: AsyncDatabase[Document]) -> None:
    assert await EventStore(db).head_sequence() == 0


async def test_read_stream_from_and_to_versions(store: EventStore) -> None:
    await fill(store, 3, 6)

    async def versions(from_version: int = 1, to_version: int | None = None) -> list[int]:
        return [
            e.aggregate_version
            async for e in store.read_stream("t", "s1", from_version, to_version)
        ]

    assert await versions() == [1, 2, 3, 4, 5, 6]
    assert await versions(4) == [4, 5, 6]
    assert await versions(2, 4) == [2, 3, 4]
    assert await versions(3, 3) == [3]
    assert await versions(7) == []
    assert await versions(5, 2) == []
    stream = [e async for e in store.read_stream("t", "s1")]
    assert {e.aggregate_id for e in stream} == {"s1"}
    assert [e.data["k"] for e in stream] == list(range(6))
    assert [e async for e in store.read_stream("t", "missing")] == []
    assert [e async for e in store.read_stream("other", "s1")] == []


async def test_read_all_pages_by_sequence(store: EventStore) -> None:
    recorded = await fill(store, 3, 9)  # 27 events
    pages: list[list[RecordedEvent]] = []
    after = 0
    while True:
        page = [e async for e in store.read_all(after, limit=10, batch_size=4)]
        if not page:
            break
        pages.append(page)
        after = page[-1].sequence
    assert [len(p) for p in pages] == [10, 10, 7]
    assert [e for p in pages for e in p] == recorded
    assert [e.sequence async for e in store.read_all(25)] == [26, 27]
    assert [e async for e in store.read_all(27)] == []
    assert [e.sequence async for e in store.read_all(3, through=7)] == [4, 5, 6, 7]
    assert [e.sequence async for e in store.read_all(3, 2, through=7)] == [4, 5]
    assert [e.sequence async for e in store.read_all(25, through=40)] == [26, 27]
    assert [e async for e in store.read_all(7, through=7)] == []


async def test_read_all_by_event_type(store: EventStore) -> None:
    for i in range(6):
        kind = "a.one" if i % 2 else "b.two"
        await store.append("t", "x", [NewEvent(kind, {"i": i}), NewEvent("c.three", {"i": i})])
    ones = [e async for e in store.read_all(event_types=["a.one"])]
    assert [e.data["i"] for e in ones] == [1, 3, 5]
    both = [e async for e in store.read_all(4, limit=3, event_types=["a.one", "b.two"])]
    assert [(e.event_type, e.sequence) for e in both] == [
        ("b.two", 5),
        ("a.one", 7),
        ("b.two", 9),
    ]


async def test_read_by_type_in_a_time_window(store: EventStore) -> None:
    for minute in range(6):
        at = T0 + timedelta(minutes=minute)
        await store.append(
            "t",
            "x",
            [NewEvent("a.one", {"m": minute}, timestamp=at), NewEvent("b.two", {"m": minute})],
        )

    async def minutes(
        types: str | list[str], start: datetime | None = None, end: datetime | None = None
    ) -> list[int]:
        return [e.data["m"] async for e in store.read_by_type(types, start, end)]

    assert await minutes("a.one") == [0, 1, 2, 3, 4, 5]
    # [start, end): start included, end excluded.
    assert await minutes("a.one", T0 + timedelta(minutes=2), T0 + timedelta(minutes=4)) == [2, 3]
    assert await minutes("a.one", start=T0 + timedelta(minutes=4)) == [4, 5]
    assert await minutes("a.one", end=T0 + timedelta(minutes=1)) == [0]
    # A window given in another time zone is the same instant.
    paris = timezone(timedelta(hours=1))
    start = (T0 + timedelta(minutes=1)).astimezone(paris)
    assert await minutes("a.one", start, start + timedelta(minutes=1)) == [1]
    # The other type's events were stamped at append time, after every T0 minute.
    assert await minutes("b.two", end=T0 + timedelta(days=1)) == []
    assert len(await minutes(["a.one", "b.two"])) == 12
    limited = [e async for e in store.read_by_type("a.one", limit=2)]
    assert [e.data["m"] for e in limited] == [0, 1]


async def test_read_by_correlation(store: EventStore) -> None:
    def event(correlation: str, n: int) -> NewEvent:
        return NewEvent("t.happened", {"n": n}, metadata={"correlationId": correlation})

    await store.append("t", "a", [event("c1", 1), event("c2", 2)])
    await store.append("t", "b", [event("c1", 3)])
    await store.append("t", "c", [NewEvent("t.happened", {"n": 4})])
    saga = [e async for e in store.read_by_correlation("c1")]
    assert [(e.aggregate_id, e.data["n"]) for e in saga] == [("a", 1), ("b", 3)]
    assert all(e.metadata["correlationId"] == "c1" for e in saga)
    assert [e async for e in store.read_by_correlation("nobody")] == []
    assert len([e async for e in store.read_by_correlation("c1", limit=1)]) == 1


async def test_watch_tells_of_appends_of_the_watched_types_only(store: EventStore) -> None:
    stream = await store.watch(["t.happened"], max_await_ms=100)
    async with stream:
        await store.append("t", "a", [NewEvent("t.other", {"k": 0})])
        await store.append("t", "a", [NewEvent("t.happened", {"k": 1}), NewEvent("t.happened", {})])
        changes: list[Document] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(changes) < 2 and asyncio.get_running_loop().time() < deadline:
            change = await stream.try_next()
            if change is not None:
                changes.append(change)
        token = stream.resume_token
    # Only what a woken reader needs: the type and the sequence to read up to.
    assert [c["fullDocument"] for c in changes] == [
        {"eventType": "t.happened", "sequence": 2},
        {"eventType": "t.happened", "sequence": 3},
    ]
    assert token is not None
    await store.append("t", "a", [NewEvent("t.happened", {"k": 2})])
    resumed = await store.watch(["t.happened"], resume_after=token, max_await_ms=100)
    async with resumed:
        change = None
        while change is None and asyncio.get_running_loop().time() < deadline + 10:
            change = await resumed.try_next()
    assert change is not None and change["fullDocument"]["sequence"] == 4


async def test_watch_without_types_tells_of_every_append(store: EventStore) -> None:
    """`esmongo events tail -f` follows every type through it."""
    stream = await store.watch(max_await_ms=100)
    async with stream:
        await store.append("t", "a", [NewEvent("t.other", {}), NewEvent("t.happened", {})])
        changes: list[Document] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(changes) < 2 and asyncio.get_running_loop().time() < deadline:
            change = await stream.try_next()
            if change is not None:
                changes.append(change)
    assert [c["fullDocument"]["eventType"] for c in changes] == ["t.other", "t.happened"]


async def test_decimal_money_round_trips_as_decimal128(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    data = {
        "amount": Decimal("1234567890123.45"),
        "fee": Decimal("0.10"),
        "lines": [{"price": Decimal("19.99")}, {"price": Decimal("-0.01")}],
    }
    (recorded,) = await store.append("t", "x", [NewEvent("t.paid", data)])
    raw = await db.client.get_database(db.name)["events"].find_one({"_id": recorded.sequence})
    assert raw is not None
    assert raw["data"]["amount"] == Decimal128("1234567890123.45")
    assert isinstance(raw["data"]["lines"][0]["price"], Decimal128)
    (event,) = [e async for e in store.read_stream("t", "x")]
    assert event.data == data
    assert isinstance(event.data["fee"], Decimal)
    assert str(event.data["fee"]) == "0.10"  # the exponent survives: trailing zeros kept
    assert str(event.data["lines"][1]["price"]) == "-0.01"


async def test_timestamps_are_utc_and_aware(store: EventStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    (stamped,) = await store.append("t", "x", [NewEvent("t.happened", {})])
    (read,) = [e async for e in store.read_stream("t", "x")]
    assert read.timestamp == stamped.timestamp
    assert read.timestamp.utcoffset() == timedelta(0)
    assert before <= read.timestamp <= datetime.now(UTC)
    assert read.metadata["timestamp"] == read.timestamp


async def test_given_timestamp_is_recorded_as_the_same_utc_millisecond(store: EventStore) -> None:
    """The event append returns equals the event read back, whatever zone it was given in."""
    given = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    (recorded,) = await store.append("t", "x", [NewEvent("t.happened", {}, timestamp=given)])
    (read,) = [e async for e in store.read_stream("t", "x")]
    assert read == recorded
    assert read.timestamp == datetime(2024, 1, 2, 1, 4, 5, 123000, tzinfo=UTC)
    assert read.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        NewEvent("t.happened", {}, timestamp=datetime(2024, 1, 1))
