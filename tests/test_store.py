"""What the default store does beyond the conformance suite (tests/test_store_conformance.py
runs esmongo.testing on it): the stored document's shape, its indexes, schema validation,
and the query count of the write path."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    EventValidationError,
    NewEvent,
    SchemaRegistry,
)
from esmongo.codec import Document
from esmongo.errors import UnknownEventTypeError
from esmongo.events import StreamId
from esmongo.schema import EventSchema
from esmongo.store import batch_writer, retries
from esmongo.testing import all_events, assert_gap_free
from esmongo.testing import new_events as events


async def count(db: AsyncDatabase[Document]) -> int:
    return await db["events"].count_documents({})


async def test_stored_document_has_the_seed_shape(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    meta = {"userId": "u1", "correlationId": "c1", "causationId": "x"}
    (event,) = await store.append(
        "order", "o1", [NewEvent("order.placed", {"a": 1}, metadata=meta)]
    )
    doc = await db["events"].find_one({"eventId": event.event_id})
    assert doc is not None
    assert set(doc) == {
        "_id",
        "eventId",
        "eventType",
        "eventVersion",
        "aggregateType",
        "aggregateId",
        "aggregateVersion",
        "data",
        "metadata",
        "timestamp",
        "sequence",
        "prev",
        "hash",
    }
    assert doc["prev"] == "" and len(doc["hash"]) == 64  # the first link of the chain
    assert doc["eventType"] == "order.placed"
    assert doc["eventVersion"] == "1.0"
    assert doc["data"] == {"a": 1}
    assert doc["metadata"] == {**meta, "timestamp": doc["timestamp"]}
    assert doc["sequence"] == 1


async def test_init_is_idempotent_and_makes_unique_indexes(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    await store.append("order", "o1", events(1))
    await store.init()  # again: keeps the counter
    assert await store.head_sequence() == 1
    info = await db["events"].index_information()
    unique = {tuple(k for k, _ in spec["key"]) for spec in info.values() if spec.get("unique")}
    assert ("aggregateType", "aggregateId", "aggregateVersion") in unique
    assert ("eventId",) in unique


# ---- validation -----------------------------------------------------------------------

ORDER_SCHEMA = EventSchema(
    "order.placed",
    "1.0",
    {
        "type": "object",
        "required": ["total", "lines"],
        "properties": {
            "total": {"type": "number", "minimum": 0},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {"sku": {"type": "string", "minLength": 1}},
                },
            },
        },
    },
)


@pytest.fixture
async def validating_store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db, registry=SchemaRegistry([ORDER_SCHEMA]))
    await store.init()
    return store


def order(total: Any, sku: str = "A1") -> NewEvent:
    return NewEvent("order.placed", {"total": total, "lines": [{"sku": sku}]})


async def test_valid_events_pass_validation(validating_store: EventStore) -> None:
    recorded = await validating_store.append("order", "o1", [order(5), order(0)])
    assert len(recorded) == 2


async def test_invalid_event_names_event_path_and_rule_and_writes_nothing(
    validating_store: EventStore, db: AsyncDatabase[Document]
) -> None:
    bad = order(10, sku="")
    with pytest.raises(EventValidationError) as caught:
        await validating_store.append("order", "o1", [order(1), bad, order(2)])
    error = caught.value
    assert error.event_type == "order.placed"
    assert error.event_version == "1.0"
    assert error.index == 1
    assert error.stream == StreamId("order", "o1")
    assert [(v.path, v.rule) for v in error.violations] == [("$.lines[0].sku", "minLength")]
    message = str(error)
    assert "order.placed" in message
    assert "#1" in message
    assert "$.lines[0].sku" in message
    assert "minLength" in message
    assert await count(db) == 0
    assert await validating_store.head_sequence() == 0


async def test_every_violation_of_an_event_is_reported(validating_store: EventStore) -> None:
    with pytest.raises(EventValidationError) as caught:
        await validating_store.append("order", "o1", [NewEvent("order.placed", {"total": -1})])
    rules = {(v.path, v.rule) for v in caught.value.violations}
    assert rules == {("$", "required"), ("$.total", "minimum")}
    assert any("'lines' is a required property" in v.message for v in caught.value.violations)


async def test_invalid_event_in_another_stream_fails_the_whole_multi_stream_append(
    validating_store: EventStore, db: AsyncDatabase[Document]
) -> None:
    with pytest.raises(EventValidationError) as caught:
        await validating_store.append_streams(
            [
                AppendRequest("order", "o1", [order(1)]),
                AppendRequest("order", "o2", [order("ten")]),
            ]
        )
    assert caught.value.stream == StreamId("order", "o2")
    assert caught.value.index == 0
    assert await count(db) == 0


async def test_unregistered_types_pass_unless_strict(db: AsyncDatabase[Document]) -> None:
    lenient = EventStore(db, registry=SchemaRegistry([ORDER_SCHEMA]))
    await lenient.init()
    await lenient.append("t", "x", [NewEvent("not.registered", {"anything": 1})])
    strict = EventStore(db, registry=SchemaRegistry([ORDER_SCHEMA], strict=True))
    with pytest.raises(UnknownEventTypeError, match=r"not\.registered"):
        await strict.append("t", "y", [order(1), NewEvent("not.registered", {})])
    with pytest.raises(UnknownEventTypeError, match=r"v2\.0"):
        await strict.append("t", "y", [NewEvent("order.placed", {}, event_version="2.0")])
    await strict.append("t", "y", [order(1)])
    assert [e.aggregate_id async for e in strict.read_all()] == ["x", "y"]


# ---- the write path's queries --------------------------------------------------------


async def test_exact_version_appends_to_streams_it_wrote_cost_no_query(
    counted: tuple[FindCounter, AsyncDatabase[Document]], db: AsyncDatabase[Document]
) -> None:
    """The head this store wrote is trusted while the counter's generation stays (ADR 0013);
    a head it only read is confirmed, once; a stream moved on by another store is refused
    by the unique index, as before."""
    listener, watched = counted
    store = EventStore(watched)
    await store.init()
    await store.append("t", "x", events(1), NO_STREAM)
    await EventStore(db).append("t", "y", events(2), NO_STREAM)
    listener.commands.clear()
    listener.filters.clear()
    await store.append("t", "x", events(1), 1)
    await store.append("t", "x", events(1), 2)
    # No version check; one read of the hash of the other store's last event, to link to
    # it (the chain, ADR 0014), then none: this store wrote the event before.
    assert listener.commands == ["find"] and listener.filters == [{"_id": 3}]
    assert [e.aggregate_version async for e in store.read_stream("t", "y")] == [1, 2]
    listener.commands.clear()
    await store.append("t", "y", events(1), 2)  # read, not written: confirmed
    await store.append("t", "y", events(1), 3)
    assert listener.commands == ["find"]
    await EventStore(db).append("t", "x", events(1), 3)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("t", "x", events(1), 3)
    assert caught.value.actual == 4
    assert_gap_free(await all_events(store))


async def test_any_appends_to_streams_it_wrote_cost_no_query(
    counted: tuple[FindCounter, AsyncDatabase[Document]], db: AsyncDatabase[Document]
) -> None:
    listener, watched = counted
    store = EventStore(watched)
    await store.init()
    for name in ("w", "x", "y"):
        await store.append("t", name, events(2), NO_STREAM)
    listener.commands.clear()
    written = await store.append_streams(
        [AppendRequest("t", name, events(1), ANY) for name in ("w", "x", "y")]
    )
    assert [s[0].aggregate_version for s in written] == [3, 3, 3]
    assert listener.commands == []  # it wrote those heads, and the counter has not moved
    # Behind (another store appended meanwhile): the unique index refuses the optimistic
    # version, the stream is forgotten, and the append goes again after a head query.
    await EventStore(db).append("t", "x", events(2), 3)
    (sixth,) = await store.append("t", "x", events(1), ANY)
    (seventh,) = await store.append("t", "x", events(1), STREAM_EXISTS)
    assert (sixth.aggregate_version, seventh.aggregate_version) == (6, 7)
    assert [e.aggregate_version async for e in store.read_stream("t", "x")] == list(range(1, 8))
    assert_gap_free(await all_events(store))


@pytest.mark.parametrize("group_commit", [True, False])
async def test_an_any_append_outlasts_more_lost_races_than_the_retry_count(
    db: AsyncDatabase[Document], group_commit: bool
) -> None:
    """Each time the append has read its stream's head, another store appends to that
    stream first: it loses the race for the next version, more times than MAX_RETRIES. Each
    loss is another commit, so it goes on until it wins (it used to fail after 10)."""
    store, rival = EventStore(db, group_commit=group_commit), EventStore(db)
    await store.init()
    await store.append("t", "hot", events(1), ANY)
    losses = retries.MAX_RETRIES + 3
    overtaking = False

    async def overtake() -> None:  # the rival's own rounds pass through here too
        nonlocal losses, overtaking
        if losses > 0 and not overtaking:
            losses, overtaking = losses - 1, True
            try:
                await rival.append("t", "hot", events(1), ANY)
            finally:
                overtaking = False

    batch_writer.PAUSE_POINTS["checked"] = overtake
    try:
        (recorded,) = await store.append("t", "hot", events(1), ANY)
    finally:
        del batch_writer.PAUSE_POINTS["checked"]
    assert losses == 0
    assert recorded.aggregate_version == retries.MAX_RETRIES + 5
    assert_gap_free(await all_events(store))
