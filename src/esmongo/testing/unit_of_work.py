"""The unit of work: documents given with `writes=` commit with an append's events, or
neither does; a retried append writes nothing again."""

from __future__ import annotations

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from esmongo.codec import Document
from esmongo.events import NO_STREAM, RecordedEvent
from esmongo.store import AppendRequest, DocumentWrite, EventStore
from esmongo.testing.base import StoreCase, all_events, assert_gap_free, new_events

RECEIPTS = "conformance_receipts"
"""The application's collection the cases write to beside the events."""


class UnitOfWorkCases(StoreCase):
    """`append(..., writes=...)` and `append_streams(..., writes=...)`."""

    async def test_writes_commit_with_the_events_and_see_them(
        self, store: EventStore, db: AsyncDatabase[Document]
    ) -> None:
        def record(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
            last = recorded[0][-1]
            return [
                DocumentWrite(RECEIPTS, InsertOne({"_id": "k1", "sequence": last.sequence})),
                DocumentWrite(RECEIPTS, UpdateOne({"_id": "k1"}, {"$set": {"seen": True}})),
            ]

        recorded = await store.append("t", "x", new_events(2), NO_STREAM, writes=record)
        assert await db[RECEIPTS].find_one({"_id": "k1"}) == {
            "_id": "k1",
            "sequence": recorded[-1].sequence,
            "seen": True,
        }

    async def test_a_failing_write_fails_its_events_too(
        self, store: EventStore, db: AsyncDatabase[Document]
    ) -> None:
        await store.append("t", "before", new_events(1))
        await db[RECEIPTS].insert_one({"_id": "taken"})
        writes = [
            DocumentWrite(RECEIPTS, InsertOne({"_id": "new"})),
            DocumentWrite(RECEIPTS, InsertOne({"_id": "taken"})),
        ]
        with pytest.raises(BulkWriteError):
            await store.append("t", "x", new_events(2), writes=writes)
        with pytest.raises(BulkWriteError):
            await store.append_streams(
                [AppendRequest("t", "y", new_events(1)), AppendRequest("t", "z", new_events(1))],
                writes=writes,
            )
        assert [await store.stream_version("t", s) for s in ("x", "y", "z")] == [0, 0, 0]
        assert {d["_id"] async for d in db[RECEIPTS].find()} == {"taken"}
        # Gap-free: the failed appends took no sequence number.
        (after,) = await store.append("t", "x", new_events(1))
        assert after.sequence == 2
        assert_gap_free(await all_events(store))

    async def test_a_failing_writes_function_fails_the_append(self, store: EventStore) -> None:
        def broken(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
            raise ValueError("cannot build the record")

        with pytest.raises(ValueError, match="cannot build"):
            await store.append("t", "x", new_events(1), writes=broken)
        assert await store.stream_version("t", "x") == 0
        assert await store.head_sequence() == 0

    async def test_writes_across_streams_see_every_stream(
        self, store: EventStore, db: AsyncDatabase[Document]
    ) -> None:
        def record(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
            heads = [events[-1].sequence for events in recorded]
            return [DocumentWrite(RECEIPTS, InsertOne({"_id": "pair", "heads": heads}))]

        recorded = await store.append_streams(
            [AppendRequest("t", "a", new_events(2)), AppendRequest("t", "b", new_events(1))],
            writes=record,
        )
        receipt = await db[RECEIPTS].find_one({"_id": "pair"})
        assert receipt is not None
        assert receipt["heads"] == [events[-1].sequence for events in recorded]

    async def test_a_retried_append_writes_nothing_again(
        self, store: EventStore, db: AsyncDatabase[Document]
    ) -> None:
        batch = new_events(2)
        writes = [DocumentWrite(RECEIPTS, UpdateOne({"_id": "k"}, {"$inc": {"n": 1}}, upsert=True))]
        first = await store.append("t", "x", batch, NO_STREAM, writes=writes)
        again = await store.append("t", "x", batch, NO_STREAM, writes=writes)
        assert again == first
        assert await db[RECEIPTS].find_one({"_id": "k"}) == {"_id": "k", "n": 1}

    async def test_writes_need_events_to_commit_with(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append(
                "t", "x", [], writes=[DocumentWrite(RECEIPTS, InsertOne({"_id": "k"}))]
            )
