"""The store's change stream (`watch`), and what values look like after a round trip,
as stored and as read.

The read paths themselves are cases of the conformance suite (esmongo.testing.reads).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent
from esmongo.codec import Document


async def next_changes(stream: AsyncChangeStream[Document], count: int) -> list[Document]:
    """The next `count` changes, or fewer when they take over 10 s (the assert shows which)."""
    changes: list[Document] = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(changes) < count and asyncio.get_running_loop().time() < deadline:
        change = await stream.try_next()
        if change is not None:
            changes.append(change)
    return changes


async def test_watch_tells_of_appends_of_the_watched_types_only(store: EventStore) -> None:
    stream = await store.watch(["t.happened"], max_await_ms=100)
    async with stream:
        await store.append("t", "a", [NewEvent("t.other", {"k": 0})])
        await store.append("t", "a", [NewEvent("t.happened", {"k": 1}), NewEvent("t.happened", {})])
        changes = await next_changes(stream, 2)
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
        changes = await next_changes(resumed, 1)
    assert [c["fullDocument"]["sequence"] for c in changes] == [4]


async def test_watch_without_types_tells_of_every_append(store: EventStore) -> None:
    """`esmongo events tail -f` follows every type through it."""
    stream = await store.watch(max_await_ms=100)
    async with stream:
        await store.append("t", "a", [NewEvent("t.other", {}), NewEvent("t.happened", {})])
        changes = await next_changes(stream, 2)
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


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        NewEvent("t.happened", {}, timestamp=datetime(2024, 1, 1))
