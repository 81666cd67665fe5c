"""The event store's write path: expected versions, idempotency, validation, atomicity,
and the global sequence under concurrent writers."""

from __future__ import annotations

import asyncio
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
    RecordedEvent,
    SchemaRegistry,
)
from esmongo.codec import Document
from esmongo.errors import DuplicateEventError, UnknownEventTypeError
from esmongo.events import Expected, StreamId
from esmongo.schema import EventSchema

WRITERS = 8


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db)
    await store.init()
    return store


def events(n: int, event_type: str = "thing.happened", **data: Any) -> list[NewEvent]:
    return [NewEvent(event_type, {"n": i, **data}) for i in range(n)]


async def all_events(store: EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read_all()]


async def count(db: AsyncDatabase[Document]) -> int:
    return await db["events"].count_documents({})


def assert_gap_free(recorded: list[RecordedEvent]) -> None:
    """Sequence 1..N exactly once each; each stream's versions 1..n exactly once each."""
    sequences = [e.sequence for e in recorded]
    assert sorted(sequences) == list(range(1, len(recorded) + 1))
    streams: dict[tuple[str, str], list[int]] = {}
    for event in recorded:
        streams.setdefault((event.aggregate_type, event.aggregate_id), []).append(
            event.aggregate_version
        )
    for versions in streams.values():
        assert sorted(versions) == list(range(1, len(versions) + 1))
    assert len({e.event_id for e in recorded}) == len(recorded)


# ---- basic append ---------------------------------------------------------------------


async def test_append_assigns_versions_and_sequences(store: EventStore) -> None:
    first = await store.append("order", "o1", events(2), NO_STREAM)
    second = await store.append("order", "o2", events(1), NO_STREAM)
    third = await store.append("order", "o1", events(3), 2)
    assert [(e.aggregate_version, e.sequence) for e in first] == [(1, 1), (2, 2)]
    assert [(e.aggregate_version, e.sequence) for e in second] == [(1, 3)]
    assert [(e.aggregate_version, e.sequence) for e in third] == [(3, 4), (4, 5), (5, 6)]
    assert await store.stream_version("order", "o1") == 5
    assert await store.stream_version("order", "o2") == 1
    assert await store.stream_version("order", "nope") == 0
    assert await store.head_sequence() == 6
    # What append returns is what is stored.
    stored = await all_events(store)
    assert stored == first + second + third


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
    }
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


async def test_empty_append_writes_nothing(store: EventStore) -> None:
    assert await store.append("order", "o1", []) == []
    assert await store.append_streams([]) == []
    assert await store.head_sequence() == 0


@pytest.mark.parametrize(
    ("aggregate_type", "aggregate_id", "expected"),
    [("", "x", ANY), ("t", "", ANY), ("t", "x", -1), ("t", "x", True), ("t", "x", "1")],
)
async def test_bad_arguments_are_refused(
    store: EventStore, aggregate_type: str, aggregate_id: str, expected: Any
) -> None:
    with pytest.raises(ValueError):
        await store.append(aggregate_type, aggregate_id, events(1), expected)
    assert await store.head_sequence() == 0


async def test_one_append_may_not_repeat_an_event_id_or_a_stream(store: EventStore) -> None:
    event = NewEvent("thing.happened", {})
    with pytest.raises(ValueError, match="distinct event ids"):
        await store.append("t", "x", [event, event])
    with pytest.raises(ValueError, match="once"):
        await store.append_streams([AppendRequest("t", "x", events(1))] * 2)
    assert await store.head_sequence() == 0


# ---- expected versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (0, ANY),
        (2, ANY),
        (0, NO_STREAM),
        (0, 0),
        (2, 2),
        (2, STREAM_EXISTS),
    ],
)
async def test_expected_version_passes(
    store: EventStore, existing: int, expected: Expected
) -> None:
    if existing:
        await store.append("t", "x", events(existing))
    recorded = await store.append("t", "x", events(1), expected)
    assert recorded[0].aggregate_version == existing + 1


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (2, NO_STREAM),
        (0, STREAM_EXISTS),
        (0, 1),
        (2, 1),
        (2, 3),
        (2, 0),
    ],
)
async def test_expected_version_fails_with_details(
    store: EventStore, existing: int, expected: Expected
) -> None:
    if existing:
        await store.append("t", "x", events(existing))
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("t", "x", events(1), expected)
    error = caught.value
    assert error.stream == StreamId("t", "x")
    assert error.expected == expected
    assert error.actual == existing
    assert "t/x" in str(error)
    assert await store.stream_version("t", "x") == existing
    assert await store.head_sequence() == existing


# ---- idempotency ----------------------------------------------------------------------


@pytest.mark.parametrize("expected", [ANY, NO_STREAM, 0])
async def test_retry_with_same_event_ids_returns_recorded_events(
    store: EventStore, db: AsyncDatabase[Document], expected: Expected
) -> None:
    batch = events(3)
    first = await store.append("t", "x", batch, expected)
    await store.append("t", "other", events(1))
    again = await store.append("t", "x", batch, expected)
    assert again == first
    assert await count(db) == 4
    assert await store.head_sequence() == 4
    assert await store.stream_version("t", "x") == 3


async def test_retry_of_a_multi_stream_append_is_idempotent(store: EventStore) -> None:
    requests = [AppendRequest("t", "a", events(2), NO_STREAM), AppendRequest("t", "b", events(1))]
    first = await store.append_streams(requests)
    again = await store.append_streams(requests)
    assert again == first
    assert await store.head_sequence() == 3


async def test_partly_recorded_event_ids_are_refused(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    batch = events(2)
    await store.append("t", "x", batch[:1])
    with pytest.raises(DuplicateEventError):
        await store.append("t", "x", batch)
    # The same ids on another stream are not a retry either.
    with pytest.raises(DuplicateEventError):
        await store.append("t", "y", batch[:1])
    assert await count(db) == 1
    assert await store.head_sequence() == 1


async def test_concurrent_retries_write_once(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    batch = events(2)
    results = await asyncio.gather(*[store.append("t", "x", batch) for _ in range(WRITERS)])
    assert all(r == results[0] for r in results)
    assert await count(db) == 2
    assert await store.head_sequence() == 2


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


# ---- multi-stream atomicity -----------------------------------------------------------


async def test_append_streams_writes_all_streams_in_one_block(store: EventStore) -> None:
    await store.append("t", "b", events(1))
    recorded = await store.append_streams(
        [
            AppendRequest("t", "a", events(2), NO_STREAM),
            AppendRequest("t", "b", events(1), 1),
            AppendRequest("u", "c", events(1), ANY),
        ]
    )
    assert [[(e.aggregate_id, e.aggregate_version) for e in s] for s in recorded] == [
        [("a", 1), ("a", 2)],
        [("b", 2)],
        [("c", 1)],
    ]
    assert [e.sequence for s in recorded for e in s] == [2, 3, 4, 5]


async def test_append_streams_is_all_or_nothing_on_a_conflict(
    store: EventStore, db: AsyncDatabase[Document]
) -> None:
    await store.append("t", "b", events(2))
    with pytest.raises(ConcurrencyError) as caught:
        await store.append_streams(
            [
                AppendRequest("t", "a", events(2), NO_STREAM),
                AppendRequest("t", "b", events(1), 1),
                AppendRequest("t", "c", events(1)),
            ]
        )
    assert caught.value.stream == StreamId("t", "b")
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert await count(db) == 2
    assert await store.stream_version("t", "a") == 0
    assert await store.stream_version("t", "c") == 0
    assert await store.head_sequence() == 2
    # The next append continues the sequence with no gap.
    (event,) = await store.append("t", "a", events(1))
    assert event.sequence == 3


# ---- concurrency ----------------------------------------------------------------------


async def test_concurrent_writers_on_one_stream_have_exactly_one_winner(store: EventStore) -> None:
    results = await asyncio.gather(
        *[store.append("t", "x", events(2, writer=i), NO_STREAM) for i in range(WRITERS)],
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, list)]
    losers = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1
    assert len(losers) == WRITERS - 1
    assert all(e.actual == 2 and e.expected is NO_STREAM for e in losers)
    stored = await all_events(store)
    assert stored == winners[0]


async def test_concurrent_writers_on_one_stream_with_optimistic_retries(
    store: EventStore,
) -> None:
    """Each writer appends with the version it read; on a conflict it reads again.

    Every version has exactly one winner, no write is lost or duplicated."""
    per_writer = 4
    conflicts = 0

    async def writer(w: int) -> list[RecordedEvent]:
        nonlocal conflicts
        mine: list[RecordedEvent] = []
        for k in range(per_writer):
            batch = [NewEvent("thing.happened", {"writer": w, "k": k})]
            while True:
                version = await store.stream_version("t", "x")
                try:
                    mine += await store.append("t", "x", batch, version)
                    break
                except ConcurrencyError as exc:
                    assert exc.actual > version
                    conflicts += 1
        return mine

    written = await asyncio.gather(*[writer(w) for w in range(WRITERS)])
    stored = await all_events(store)
    assert len(stored) == WRITERS * per_writer
    assert_gap_free(stored)
    assert sorted(e.event_id for w in written for e in w) == sorted(e.event_id for e in stored)
    assert sorted((e.data["writer"], e.data["k"]) for e in stored) == [
        (w, k) for w in range(WRITERS) for k in range(per_writer)
    ]
    # A writer's own events are in its order within the stream.
    for w in range(WRITERS):
        mine = [e.data["k"] for e in stored if e.data["writer"] == w]
        assert mine == list(range(per_writer))
    assert conflicts > 0  # the writers really did race
    assert await store.head_sequence() == len(stored)


async def test_concurrent_writers_on_different_streams_lose_nothing(store: EventStore) -> None:
    per_writer = 6

    async def writer(w: int) -> list[RecordedEvent]:
        mine: list[RecordedEvent] = []
        for k in range(per_writer):
            expected: Expected = NO_STREAM if k == 0 else 2 * k
            mine += await store.append("t", f"s{w}", events(2, writer=w, k=k), expected)
        return mine

    written = await asyncio.gather(*[writer(w) for w in range(WRITERS)])
    stored = await all_events(store)
    assert len(stored) == WRITERS * per_writer * 2
    assert_gap_free(stored)
    assert sorted(e.sequence for w in written for e in w) == [e.sequence for e in stored]
    for w, mine in enumerate(written):
        assert [e.aggregate_version for e in mine] == list(range(1, 2 * per_writer + 1))
        assert all(e.aggregate_id == f"s{w}" for e in mine)
        # One append's events get consecutive sequence numbers.
        for first, second in zip(mine[::2], mine[1::2], strict=True):
            assert second.sequence == first.sequence + 1
    assert await store.head_sequence() == len(stored)


async def test_mixed_concurrent_appends_keep_the_sequence_gap_free(store: EventStore) -> None:
    """Same-stream racers, different-stream writers and multi-stream appends at once."""

    async def racer(i: int) -> int:
        try:
            await store.append("race", "one", events(1), NO_STREAM)
            return 1
        except ConcurrencyError:
            return 0

    async def pair(i: int) -> int:
        await store.append_streams(
            [AppendRequest("pair", f"a{i}", events(2)), AppendRequest("pair", f"b{i}", events(1))]
        )
        return 3

    async def solo(i: int) -> int:
        await store.append("solo", f"s{i}", events(3))
        return 3

    jobs = [f(i) for i in range(WRITERS) for f in (racer, pair, solo)]
    written = sum(await asyncio.gather(*jobs))
    stored = await all_events(store)
    assert written == len(stored) == 1 + WRITERS * 6
    assert_gap_free(stored)
    assert await store.stream_version("race", "one") == 1


async def test_readers_never_see_a_gap_while_writers_commit(store: EventStore) -> None:
    """A reader that has seen sequence N has seen every event below N (projections rely on it)."""
    appends = 10
    done = asyncio.Event()
    seen: list[int] = []

    async def writer(w: int) -> None:
        for _ in range(appends):
            await store.append("t", f"s{w}", events(2))

    async def reader() -> None:
        while True:
            finished = done.is_set()
            after = seen[-1] if seen else 0
            batch = [e.sequence async for e in store.read_all(after)]
            # Whatever is visible continues the checkpoint with no hole.
            assert batch == list(range(after + 1, after + 1 + len(batch)))
            seen.extend(batch)
            if finished:
                return
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*[writer(w) for w in range(WRITERS)])
    done.set()
    await reading
    assert seen == list(range(1, WRITERS * appends * 2 + 1))


# ---- two processes: two stores on one database ----------------------------------------


async def test_two_stores_see_each_others_appends(db: AsyncDatabase[Document]) -> None:
    """What one store remembers of a stream never hides another store's appends."""
    a, b = EventStore(db), EventStore(db)
    await a.init()
    await a.append("t", "x", events(2), NO_STREAM)
    assert [e.aggregate_version async for e in a.read_stream("t", "x")] == [1, 2]
    await b.append("t", "x", events(1), 2)
    with pytest.raises(ConcurrencyError) as caught:
        await a.append("t", "x", events(1), 2)
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    with pytest.raises(ConcurrencyError):
        await a.append("t", "x", events(1), NO_STREAM)
    (fourth,) = await a.append("t", "x", events(1), 3)
    (fifth,) = await b.append("t", "x", events(1), ANY)
    (sixth,) = await a.append("t", "x", events(1), STREAM_EXISTS)
    assert [e.aggregate_version for e in (fourth, fifth, sixth)] == [4, 5, 6]
    batch = events(2)
    first = await a.append("t", "y", batch)
    assert await b.append("t", "y", batch) == first  # a retry through the other store
    stored = await all_events(a)
    assert len(stored) == 8
    assert_gap_free(stored)
    assert await b.head_sequence() == 8


async def test_any_appends_to_streams_it_wrote_cost_one_query_not_one_per_stream(
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
    assert listener.commands == ["find"]  # one `_id $in` confirms the remembered heads
    # Behind (another store appended meanwhile): the unique index refuses the optimistic
    # version, the stream is forgotten, and the append goes again after a head query.
    await EventStore(db).append("t", "x", events(2), 3)
    (sixth,) = await store.append("t", "x", events(1), ANY)
    (seventh,) = await store.append("t", "x", events(1), STREAM_EXISTS)
    assert (sixth.aggregate_version, seventh.aggregate_version) == (6, 7)
    assert [e.aggregate_version async for e in store.read_stream("t", "x")] == list(range(1, 8))
    assert_gap_free(await all_events(store))


async def test_concurrent_writers_in_two_stores_keep_one_gap_free_sequence(
    db: AsyncDatabase[Document],
) -> None:
    stores = [EventStore(db), EventStore(db)]
    await stores[0].init()
    appends = 5

    async def writer(w: int) -> None:
        store = stores[w % 2]
        for k in range(appends):
            await store.append("t", f"s{w}", events(2, k=k), 2 * k)
            await store.append("t", "shared", events(1, w=w, k=k), ANY)

    await asyncio.gather(*[writer(w) for w in range(WRITERS)])
    stored = await all_events(stores[1])
    assert len(stored) == WRITERS * appends * 3
    assert_gap_free(stored)
    shared = [e async for e in stores[0].read_stream("t", "shared")]
    assert [e.aggregate_version for e in shared] == list(range(1, WRITERS * appends + 1))
