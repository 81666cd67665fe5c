"""projection_status reads the head and the first unapplied event through the store: the
lag stays true after a migration switch (new events only in the new log) and after the
first unapplied event's stream was archived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent
from esmongo.ops.migration import Migration, Migrator, active_events_collection
from esmongo.projections import (
    Projection,
    ProjectionRunner,
    RunnerOptions,
    Update,
    handles,
    projection_status,
)

Db = AsyncDatabase[dict[str, Any]]
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


class Doors(Projection):
    name = "doors"
    collections = {"doors": []}

    @handles("door.opened", "door.closed")
    def moved(self, event: Any) -> Update:
        return Update("doors", {"doorId": event.aggregate_id}, set={"type": event.event_type})


async def caught_up(store: EventStore) -> int:
    """A checkpoint at the head: the `doors` projection applied every event so far."""
    runner = ProjectionRunner(store, Doors(), RunnerOptions(batch_size=50))
    await runner.init()
    return await runner.catch_up()


def opened(door: str) -> tuple[str, str, list[NewEvent]]:
    return ("door", door, [NewEvent("door.opened", {}, timestamp=HOUR_AGO)])


async def test_lag_seconds_after_a_migration_switch(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    for i in range(5):
        await store.append(*opened(f"d{i}"))
    assert await caught_up(store) == 5
    migrator = Migrator(db, [Migration("noop", "door.closed", "1.0", "2.0", dict)])
    assert (await migrator.run("events_v2")).complete
    assert (await migrator.switch("events_v2")).ok
    active = EventStore(db, collection=await active_events_collection(db))
    assert active.collection_name == "events_v2"
    await active.append(*opened("late"))  # only in events_v2

    (status,) = await projection_status(active, ["doors"])
    assert (status.position, status.head, status.lag_events) == (5, 6, 1)
    assert status.lag_seconds > 3000  # the unapplied event is an hour old


async def test_lag_seconds_when_the_first_unapplied_stream_was_archived(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    await store.append(*opened("kept"))
    assert await caught_up(store) == 1
    await store.append(*opened("gone"))
    await store.append("door", "gone", [NewEvent("door.closed", {}, timestamp=HOUR_AGO)])
    await store.append(*opened("kept2"))
    report = await store.archive_stream("door", "gone")
    assert report.events == 2

    (status,) = await projection_status(store, ["doors"])
    assert (status.position, status.head, status.lag_events) == (1, 4, 3)
    assert status.lag_seconds > 3000  # #2 is in events_archive, an hour old


async def test_projection_status_takes_the_store(db: Db) -> None:
    with pytest.raises(TypeError, match="takes the EventStore"):
        await projection_status(db)  # type: ignore[arg-type]
