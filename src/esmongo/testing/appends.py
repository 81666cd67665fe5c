"""Appends: versions and sequences, the expected-version modes, conflicts, idempotent
retries by event id, and several streams in one append (all or nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import ConcurrencyError, DuplicateEventError
from esmongo.events import ANY, NO_STREAM, STREAM_EXISTS, Expected, NewEvent, StreamId
from esmongo.schema.registry import Upcasters
from esmongo.store import AppendRequest, EventStore
from esmongo.testing.base import StoreCase, all_events, assert_gap_free, new_events


class AppendCases(StoreCase):
    """What one append does, alone."""

    async def test_append_assigns_versions_and_sequences(self, store: EventStore) -> None:
        first = await store.append("order", "o1", new_events(2), NO_STREAM)
        second = await store.append("order", "o2", new_events(1), NO_STREAM)
        third = await store.append("order", "o1", new_events(3), 2)
        assert [(e.aggregate_version, e.sequence) for e in first] == [(1, 1), (2, 2)]
        assert [(e.aggregate_version, e.sequence) for e in second] == [(1, 3)]
        assert [(e.aggregate_version, e.sequence) for e in third] == [(3, 4), (4, 5), (5, 6)]
        assert await store.stream_version("order", "o1") == 5
        assert await store.stream_version("order", "o2") == 1
        assert await store.stream_version("order", "nope") == 0
        assert await store.head_sequence() == 6
        # What append returns is what is stored.
        assert await all_events(store) == first + second + third

    async def test_init_again_keeps_the_sequence(self, store: EventStore) -> None:
        await store.append("order", "o1", new_events(1))
        await store.init()
        assert await store.head_sequence() == 1
        (event,) = await store.append("order", "o1", new_events(1))
        assert (event.sequence, event.aggregate_version) == (2, 2)

    async def test_empty_append_writes_nothing(self, store: EventStore) -> None:
        assert await store.append("order", "o1", []) == []
        assert await store.append_streams([]) == []
        assert await store.head_sequence() == 0

    @pytest.mark.parametrize(
        ("aggregate_type", "aggregate_id", "expected"),
        [("", "x", ANY), ("t", "", ANY), ("t", "x", -1), ("t", "x", True), ("t", "x", "1")],
    )
    async def test_bad_arguments_are_refused(
        self, store: EventStore, aggregate_type: str, aggregate_id: str, expected: Any
    ) -> None:
        with pytest.raises(ValueError):
            await store.append(aggregate_type, aggregate_id, new_events(1), expected)
        assert await store.head_sequence() == 0

    async def test_one_append_may_not_repeat_an_event_id_or_a_stream(
        self, store: EventStore
    ) -> None:
        event = NewEvent("thing.happened", {})
        with pytest.raises(ValueError, match="distinct event ids"):
            await store.append("t", "x", [event, event])
        with pytest.raises(ValueError, match="once"):
            await store.append_streams([AppendRequest("t", "x", new_events(1))] * 2)
        assert await store.head_sequence() == 0

    # ---- expected versions ------------------------------------------------------------

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [(0, ANY), (2, ANY), (0, NO_STREAM), (0, 0), (2, 2), (2, STREAM_EXISTS)],
    )
    async def test_expected_version_passes(
        self, store: EventStore, existing: int, expected: Expected
    ) -> None:
        if existing:
            await store.append("t", "x", new_events(existing))
        recorded = await store.append("t", "x", new_events(1), expected)
        assert recorded[0].aggregate_version == existing + 1

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [(2, NO_STREAM), (0, STREAM_EXISTS), (0, 1), (2, 1), (2, 3), (2, 0)],
    )
    async def test_expected_version_fails_with_details(
        self, store: EventStore, existing: int, expected: Expected
    ) -> None:
        if existing:
            await store.append("t", "x", new_events(existing))
        with pytest.raises(ConcurrencyError) as caught:
            await store.append("t", "x", new_events(1), expected)
        error = caught.value
        assert error.stream == StreamId("t", "x")
        assert error.expected == expected
        assert error.actual == existing
        assert "t/x" in str(error)
        assert await store.stream_version("t", "x") == existing
        assert await store.head_sequence() == existing

    # ---- idempotency ------------------------------------------------------------------

    @pytest.mark.parametrize("expected", [ANY, NO_STREAM, 0])
    async def test_retry_with_same_event_ids_returns_recorded_events(
        self, store: EventStore, expected: Expected
    ) -> None:
        batch = new_events(3)
        first = await store.append("t", "x", batch, expected)
        await store.append("t", "other", new_events(1))
        again = await store.append("t", "x", batch, expected)
        assert again == first
        assert all(e.replayed for e in again)
        assert len(await all_events(store)) == 4
        assert await store.head_sequence() == 4
        assert await store.stream_version("t", "x") == 3

    async def test_a_retry_returns_the_first_recording_upcast(
        self, db: AsyncDatabase[Document]
    ) -> None:
        """A retry answers like a read: the recorded events, through today's upcasters.
        (This case gives the store upcasters of its own.)"""
        store = self.make_store(db)
        await store.init()
        store.upcasters = Upcasters()
        store.upcasters.register("conformance.renamed", "1.0", "2.0", lambda d: {"name": d["nom"]})
        batch = [NewEvent("conformance.renamed", {"nom": "Ann"}, event_version="1.0")]
        (first,) = await store.append("t", "x", batch, NO_STREAM)
        assert (first.event_version, first.data) == ("1.0", {"nom": "Ann"})
        (again,) = await store.append("t", "x", batch, NO_STREAM)
        assert again.replayed
        assert (again.event_id, again.sequence) == (first.event_id, first.sequence)
        assert (again.event_version, again.upcast_from) == ("2.0", "1.0")
        assert again.data == {"name": "Ann"}
        assert [e async for e in store.read_stream("t", "x")] == [again]
        assert await store.head_sequence() == 1

    async def test_retry_of_a_multi_stream_append_is_idempotent(self, store: EventStore) -> None:
        requests = [
            AppendRequest("t", "a", new_events(2), NO_STREAM),
            AppendRequest("t", "b", new_events(1)),
        ]
        first = await store.append_streams(requests)
        again = await store.append_streams(requests)
        assert again == first
        assert await store.head_sequence() == 3

    async def test_partly_recorded_event_ids_are_refused(self, store: EventStore) -> None:
        batch = new_events(2)
        await store.append("t", "x", batch[:1])
        with pytest.raises(DuplicateEventError):
            await store.append("t", "x", batch)
        # The same ids on another stream are not a retry either.
        with pytest.raises(DuplicateEventError):
            await store.append("t", "y", batch[:1])
        assert len(await all_events(store)) == 1
        assert await store.head_sequence() == 1

    async def test_concurrent_retries_write_once(self, store: EventStore) -> None:
        batch = new_events(2)
        results = await asyncio.gather(
            *[store.append("t", "x", batch) for _ in range(self.writers)]
        )
        assert all(r == results[0] for r in results)
        assert len(await all_events(store)) == 2
        assert await store.head_sequence() == 2

    # ---- several streams: all or nothing ----------------------------------------------

    async def test_append_streams_writes_all_streams_in_one_block(self, store: EventStore) -> None:
        await store.append("t", "b", new_events(1))
        recorded = await store.append_streams(
            [
                AppendRequest("t", "a", new_events(2), NO_STREAM),
                AppendRequest("t", "b", new_events(1), 1),
                AppendRequest("u", "c", new_events(1), ANY),
            ]
        )
        assert [[(e.aggregate_id, e.aggregate_version) for e in s] for s in recorded] == [
            [("a", 1), ("a", 2)],
            [("b", 2)],
            [("c", 1)],
        ]
        assert [e.sequence for s in recorded for e in s] == [2, 3, 4, 5]

    async def test_append_streams_is_all_or_nothing_on_a_conflict(self, store: EventStore) -> None:
        await store.append("t", "b", new_events(2))
        with pytest.raises(ConcurrencyError) as caught:
            await store.append_streams(
                [
                    AppendRequest("t", "a", new_events(2), NO_STREAM),
                    AppendRequest("t", "b", new_events(1), 1),
                    AppendRequest("t", "c", new_events(1)),
                ]
            )
        assert caught.value.stream == StreamId("t", "b")
        assert (caught.value.expected, caught.value.actual) == (1, 2)
        assert len(await all_events(store)) == 2
        assert await store.stream_version("t", "a") == 0
        assert await store.stream_version("t", "c") == 0
        assert await store.head_sequence() == 2
        # The next append continues the sequence with no gap.
        (event,) = await store.append("t", "a", new_events(1))
        assert event.sequence == 3

    async def test_append_streams_is_all_or_nothing_on_a_duplicate(self, store: EventStore) -> None:
        taken = new_events(1)
        await store.append("t", "x", taken)
        with pytest.raises(DuplicateEventError):
            await store.append_streams(
                [AppendRequest("t", "a", new_events(2)), AppendRequest("t", "b", taken)]
            )
        assert await store.stream_version("t", "a") == 0
        assert_gap_free(await all_events(store))
        assert await store.head_sequence() == 1
