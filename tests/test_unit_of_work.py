"""A unit of work: documents that commit with an append's events, or not at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from esmongo import NO_STREAM, EventStore, NewEvent, RecordedEvent, Upcasters
from esmongo.codec import Document
from esmongo.store.unit_of_work import DocumentWrite


async def test_writes_commit_with_the_events_and_see_them(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db)
    await store.init()

    def record(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
        last = recorded[0][-1]
        return [
            DocumentWrite("receipts", InsertOne({"_id": "k1", "sequence": last.sequence})),
            DocumentWrite("receipts", UpdateOne({"_id": "k1"}, {"$set": {"seen": True}})),
        ]

    events = [NewEvent("thing.made", {"n": 1}), NewEvent("thing.made", {"n": 2})]
    recorded = await store.append("thing", "t1", events, NO_STREAM, writes=record)
    assert await db["receipts"].find_one({"_id": "k1"}) == {
        "_id": "k1",
        "sequence": recorded[-1].sequence,
        "seen": True,
    }


async def test_a_failing_write_fails_its_append_alone_in_a_shared_batch(
    db: AsyncDatabase[Document],
) -> None:
    store = EventStore(db)
    await store.init()
    await db["receipts"].insert_one({"_id": "taken"})

    def append(n: int, key: str) -> Any:
        write = DocumentWrite("receipts", InsertOne({"_id": key}))
        return store.append("thing", f"t{n}", [NewEvent("thing.made", {"n": n})], writes=[write])

    results = await asyncio.gather(
        append(1, "a"), append(2, "taken"), append(3, "c"), return_exceptions=True
    )
    assert isinstance(results[1], BulkWriteError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert store.stats.transactions == 1, "the three appends did not share one transaction"
    assert store.stats.taken_out == 1
    assert await store.stream_version("thing", "t2") == 0, "the failed append's events stayed"
    assert {d["_id"] async for d in db["receipts"].find()} == {"a", "c", "taken"}
    heads = [e.sequence for r in (results[0], results[2]) for e in r]  # type: ignore[union-attr]
    assert sorted(heads) == [1, 2]  # gap-free: the failed one took no number


async def test_an_exception_in_a_writes_function_fails_that_append_alone(
    db: AsyncDatabase[Document],
) -> None:
    store = EventStore(db)
    await store.init()

    def broken(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
        raise ValueError("cannot build the record")

    results = await asyncio.gather(
        store.append("thing", "t1", [NewEvent("thing.made", {})]),
        store.append("thing", "t2", [NewEvent("thing.made", {})], writes=broken),
        store.append("thing", "t3", [NewEvent("thing.made", {})]),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert [await store.stream_version("thing", f"t{i}") for i in (1, 2, 3)] == [1, 0, 1]


async def test_an_idempotent_retry_writes_nothing_more(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db)
    await store.init()
    event = NewEvent("thing.made", {"n": 1})
    first = [DocumentWrite("receipts", InsertOne({"_id": "first"}))]
    await store.append("thing", "t1", [event], NO_STREAM, writes=first)
    again = [DocumentWrite("receipts", InsertOne({"_id": "again"}))]
    replayed = await store.append("thing", "t1", [event], NO_STREAM, writes=again)
    assert replayed[0].replayed
    assert [d["_id"] async for d in db["receipts"].find()] == ["first"]


async def test_writes_without_events_are_refused(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db)
    await store.init()
    with pytest.raises(ValueError, match="at least one event"):
        await store.append("thing", "t1", [], writes=[DocumentWrite("x", InsertOne({}))])


async def test_an_idempotent_retry_returns_upcast_events(db: AsyncDatabase[Document]) -> None:
    """Item 8: the stored events came back as stored, unlike every other read."""
    upcasters = Upcasters()
    upcasters.register("thing.made", "1.0", "2.0", lambda d: {**d, "unit": "EUR"})
    store = EventStore(db, upcasters=upcasters)
    await store.init()
    event = NewEvent("thing.made", {"n": 1}, event_version="1.0")
    await store.append("thing", "t1", [event])
    (retried,) = await store.append("thing", "t1", [event])
    (read,) = [e async for e in store.read_stream("thing", "t1")]
    assert retried.replayed
    assert (retried.event_version, retried.data) == ("2.0", {"n": 1, "unit": "EUR"})
    assert (retried.event_version, retried.data) == (read.event_version, read.data)


async def test_a_document_the_driver_cannot_encode_fails_its_append_alone(
    db: AsyncDatabase[Document],
) -> None:
    """Section 5: a non-PyMongo error inside a shared transaction failed the whole batch."""
    store = EventStore(db)
    await store.init()
    bad = NewEvent("thing.made", {}, event_id=object())  # type: ignore[arg-type]
    results = await asyncio.gather(
        store.append("thing", "t1", [NewEvent("thing.made", {})]),
        store.append("thing", "t2", [bad]),
        store.append("thing", "t3", [NewEvent("thing.made", {})]),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert [await store.stream_version("thing", f"t{i}") for i in (1, 2, 3)] == [1, 0, 1]


async def test_an_append_over_the_batch_byte_bound_goes_alone(
    db: AsyncDatabase[Document],
) -> None:
    """Section 5, checked: a single append bigger than a batch may be is not refused."""
    store = EventStore(db, max_batch_bytes=2_000)
    await store.init()
    results = await asyncio.gather(
        store.append("thing", "t1", [NewEvent("thing.made", {})]),
        store.append("thing", "t2", [NewEvent("thing.made", {"blob": "x" * 50_000})]),
        store.append("thing", "t3", [NewEvent("thing.made", {})]),
    )
    assert [len(r) for r in results] == [1, 1, 1]
    assert sorted(e.sequence for r in results for e in r) == [1, 2, 3]
