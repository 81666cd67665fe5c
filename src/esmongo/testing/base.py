"""What every case of the suite shares: the store under test, and what it must keep true."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import NewEvent, RecordedEvent
from esmongo.store import EventStore


class StoreCase:
    """The base of the suite's cases: `make_store` builds the store under test.

    The `store` fixture calls it with the `db` fixture and runs `init()`. Cases that need
    a second process's view of the same database call `make_store(db)` again.
    """

    pytestmark = [pytest.mark.asyncio]

    writers = 8
    """Concurrent tasks in the concurrency cases."""

    def make_store(self, db: AsyncDatabase[Document]) -> EventStore:
        """The store under test, on `db`, not yet initialised. Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_store(db) to return the EventStore "
            "under test"
        )

    @pytest_asyncio.fixture
    async def store(self, db: AsyncDatabase[Document]) -> EventStore:
        store = self.make_store(db)
        await store.init()
        return store


def new_events(n: int, event_type: str = "thing.happened", **data: Any) -> list[NewEvent]:
    """`n` events with distinct ids, `{"n": i, **data}` each."""
    return [NewEvent(event_type, {"n": i, **data}) for i in range(n)]


async def all_events(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read_all()]


def assert_gap_free(recorded: list[RecordedEvent]) -> None:
    """Sequence 1..N exactly once each; each stream's versions 1..n exactly once each."""
    sequences = [e.sequence for e in recorded]
    assert sorted(sequences) == list(range(1, len(recorded) + 1)), "the sequence has a gap"
    streams: dict[tuple[str, str], list[int]] = {}
    for event in recorded:
        streams.setdefault((event.aggregate_type, event.aggregate_id), []).append(
            event.aggregate_version
        )
    for stream, versions in streams.items():
        assert sorted(versions) == list(range(1, len(versions) + 1)), f"{stream} has a gap"
    assert len({e.event_id for e in recorded}) == len(recorded), "an event id is repeated"
