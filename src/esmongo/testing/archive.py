"""Archive: an archived stream stays readable by every read and takes no more events."""

from __future__ import annotations

import pytest

from esmongo.errors import AggregateNotFoundError, ConcurrencyError, StreamArchived
from esmongo.events import ANY, NO_STREAM, STREAM_EXISTS, Expected, NewEvent, StreamId
from esmongo.store import AppendRequest, EventStore
from esmongo.testing.base import StoreCase, all_events, assert_gap_free, new_events


async def with_archived_stream(store: EventStore) -> list[NewEvent]:
    """t/a (3 events, archived) between t/b's events; returns t/a's events as appended."""
    gone = [
        NewEvent("t.happened", {"n": i}, metadata={"correlationId": "c-gone"}) for i in range(3)
    ]
    await store.append("t", "b", new_events(1))
    await store.append("t", "a", gone[:2], NO_STREAM)
    await store.append("t", "b", new_events(1))
    await store.append("t", "a", gone[2:], 2)
    await store.append("t", "b", new_events(1))
    report = await store.archive_stream("t", "a", expected_version=3)
    assert (report.stream, report.version, report.events) == (StreamId("t", "a"), 3, 3)
    assert (report.first_sequence, report.last_sequence, report.already) == (2, 5, False)
    return gone


class ArchiveCases(StoreCase):
    """`archive_stream`, and what every read and append does with an archived stream."""

    async def test_an_archived_stream_is_read_everywhere(self, store: EventStore) -> None:
        gone = await with_archived_stream(store)
        stored = await all_events(store)
        assert [e.sequence for e in stored] == [1, 2, 3, 4, 5, 6]
        assert_gap_free(stored)
        archived = [e async for e in store.read_stream("t", "a")]
        assert [e.event_id for e in archived] == [e.event_id for e in gone]
        assert [e.aggregate_version for e in archived] == [1, 2, 3]
        assert [e async for e in store.read_stream("t", "a", 2, 2)] == archived[1:2]
        assert [e for e in stored if e.aggregate_id == "a"] == archived
        assert [e async for e in store.read_all(1, through=3)] == stored[1:3]
        assert [e async for e in store.read_by_correlation("c-gone")] == archived
        by_type = [e async for e in store.read_by_type("t.happened")]
        assert sorted(e.sequence for e in by_type) == [2, 3, 5]
        for event in archived:
            assert await store.event_at(event.sequence) == event
            assert await store.find_event(event.event_id) == event
        assert await store.stream_version("t", "a") == 3
        assert await store.head_sequence() == 6

    @pytest.mark.parametrize("expected", [ANY, STREAM_EXISTS, 3, NO_STREAM])
    async def test_appends_to_an_archived_stream_are_refused(
        self, store: EventStore, expected: Expected
    ) -> None:
        await with_archived_stream(store)
        with pytest.raises(StreamArchived) as caught:
            await store.append("t", "a", new_events(1), expected)
        assert caught.value.stream == StreamId("t", "a")
        # Several streams, all or nothing: the healthy one is not written either.
        with pytest.raises(StreamArchived):
            await store.append_streams(
                [AppendRequest("t", "fine", new_events(1)), AppendRequest("t", "a", new_events(1))]
            )
        assert await store.stream_version("t", "fine") == 0
        assert await store.head_sequence() == 6
        (next_event,) = await store.append("t", "b", new_events(1))
        assert next_event.sequence == 7

    async def test_a_retry_of_an_archived_append_is_still_answered(self, store: EventStore) -> None:
        gone = await with_archived_stream(store)
        again = await store.append("t", "a", gone[:2], NO_STREAM)
        assert all(e.replayed for e in again)
        assert [e.sequence for e in again] == [2, 3]

    async def test_archiving_is_idempotent_and_checked(self, store: EventStore) -> None:
        await with_archived_stream(store)
        again = await store.archive_stream("t", "a")
        assert (again.already, again.version, again.events) == (True, 3, 3)
        record = await store.archived("t", "a")
        assert record is not None and record.version == 3
        assert await store.archived("t", "b") is None
        with pytest.raises(AggregateNotFoundError):
            await store.archive_stream("t", "nobody")
        with pytest.raises(ConcurrencyError) as caught:
            await store.archive_stream("t", "b", expected_version=2)
        assert (caught.value.expected, caught.value.actual) == (2, 3)
        assert [e.aggregate_version async for e in store.read_stream("t", "b")] == [1, 2, 3]
