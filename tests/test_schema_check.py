"""Stored versions that upcasting cannot bring to the latest, and syncing the catalog
declared in code to `event_schemas` with drift reported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter, examined
from esmongo import EventStore, NewEvent, SchemaRegistry, Upcasters
from esmongo.codec import Document
from esmongo.ops.schema_check import (
    StoredVersion,
    UnreachableVersion,
    check_versions,
    stored_schemas,
    sync,
    unreachable_versions,
)
from esmongo.schema import EventSchema, SchemaCatalog
from esmongo.store import queries

ANYTHING: dict[str, Any] = {"type": "object"}


def schema(event_type: str, version: str, **extra: Any) -> EventSchema:
    return EventSchema(event_type, version, extra.pop("schema", ANYTHING), **extra)


async def test_reports_stored_versions_without_a_path_to_the_latest(
    db: AsyncDatabase[Document],
) -> None:
    registry = SchemaRegistry(
        [schema("thing.made", v) for v in ("1.0", "2.0", "9.0", "10.0")] + [schema("x.y", "1.0")]
    )
    upcasters = Upcasters()
    upcasters.register("thing.made", "1.0", "2.0", lambda d: d)
    store = EventStore(db, registry=registry, upcasters=upcasters)
    await store.init()
    for version, count in [("1.0", 3), ("2.0", 2), ("9.0", 1), ("10.0", 4)]:
        events = [NewEvent("thing.made", {}, event_version=version) for _ in range(count)]
        await store.append("thing", f"t{version}", events)
    await store.append("x", "1", [NewEvent("x.y", {})])
    await store.append("loose", "1", [NewEvent("loose.one", {}, event_version="1.0")])
    await store.append("loose", "2", [NewEvent("loose.one", {}, event_version="2.0")])

    found = await unreachable_versions(store)
    assert found == [  # "10.0" is the latest, not "9.0"; 1.0 stops at 2.0
        UnreachableVersion("loose.one", "1.0", 1, "1.0", "2.0"),
        UnreachableVersion("thing.made", "1.0", 3, "2.0", "10.0"),
        UnreachableVersion("thing.made", "2.0", 2, "2.0", "10.0"),
        UnreachableVersion("thing.made", "9.0", 1, "9.0", "10.0"),
    ]
    assert "3 thing.made v1.0 event(s) upcast to v2.0, not to the latest v10.0" in str(found[1])

    upcasters.register("thing.made", "2.0", "9.0", lambda d: d)
    upcasters.register("thing.made", "9.0", "10.0", lambda d: d)
    upcasters.register("loose.one", "1.0", "2.0", lambda d: d)
    assert await unreachable_versions(store) == []


async def test_archived_events_are_checked_too(db: AsyncDatabase[Document]) -> None:
    registry = SchemaRegistry([schema("thing.made", v) for v in ("1.0", "2.0")])
    store = EventStore(db, registry=registry, upcasters=Upcasters())
    await store.init()
    old = [NewEvent("thing.made", {}, event_version="1.0") for _ in range(2)]
    await store.append("thing", "old", old)
    await store.append("thing", "new", [NewEvent("thing.made", {}, event_version="2.0")])
    await store.archive_stream("thing", "old")
    assert await store.events.count_documents({"eventVersion": "1.0"}) == 0

    found = await unreachable_versions(store)
    assert found == [UnreachableVersion("thing.made", "1.0", 2, "1.0", "2.0")]


async def test_versions_are_counted_a_range_of_sequences_at_a_time(
    db: AsyncDatabase[Document], monkeypatch: Any
) -> None:
    """Every event counted once across range boundaries, archived ones included."""
    monkeypatch.setattr(queries, "VERSION_COUNT_CHUNK", 3)
    store = EventStore(db)
    await store.init()
    for n in range(5):
        events = [NewEvent("thing.made", {}, event_version=f"{n % 2}.0") for _ in range(n + 1)]
        await store.append("thing", f"t{n}", events)
    await store.archive_stream("thing", "t2")
    assert await store.version_counts() == {("thing.made", "0.0"): 9, ("thing.made", "1.0"): 6}


async def test_counting_versions_reads_each_event_once(
    counted: tuple[FindCounter, AsyncDatabase[Document]], db: AsyncDatabase[Document]
) -> None:
    """The count asked the collection for its highest sequence first (`find_one` sorted
    backward), which reads every event on the embedded server: 22 s at a million events,
    every time a service started (benchmarks/bench_scale.py). Each command it sends to the
    events collections is explained again: together they examine each event once."""
    listener, watched = counted
    store = EventStore(db)
    await store.init()
    for n in range(4):
        await store.append("thing", f"t{n}", [NewEvent("thing.made", {}) for _ in range(n + 5)])
    await store.archive_stream("thing", "t1")
    counting = EventStore(watched)
    listener.sent.clear()
    assert await counting.version_counts() == {("thing.made", "1.0"): 26}
    logs = {store.events.name, store.archive.events.name}
    assert await examined(db, listener.sent, logs) == 26


def test_a_type_with_no_stored_event_or_no_schema_is_judged_by_what_exists() -> None:
    registry = SchemaRegistry([schema("a.b", "2.0")])
    stored = [StoredVersion("a.b", "2.0", 5), StoredVersion("c.d", "3.0", 1)]
    assert check_versions(stored, registry, Upcasters()) == []
    stored.append(StoredVersion("a.b", "3.0", 1))  # newer than anything registered
    assert check_versions(stored, registry, Upcasters()) == [
        UnreachableVersion("a.b", "3.0", 1, "3.0", "2.0")
    ]


async def test_sync_adds_then_is_in_sync_then_reports_drift(db: AsyncDatabase[Document]) -> None:
    catalog = SchemaCatalog(db, SchemaRegistry())
    await catalog.init()
    declared = [
        schema("a.made", "1.0", description="made", projections=("p1",)),
        schema(
            "a.made",
            "2.0",
            schema={"type": "object", "required": ["n"]},
            previous_version="1.0",
        ),
        schema("a.gone", "1.0"),
    ]
    dry = await sync(catalog, declared, dry_run=True)
    assert [(s.event_type, s.version) for s in dry.added] == [
        ("a.gone", "1.0"),
        ("a.made", "1.0"),
        ("a.made", "2.0"),
    ]
    assert await stored_schemas(catalog) == []  # a dry run writes nothing

    first = await sync(catalog, declared)
    assert len(first.added) == 3 and not first.drift
    assert catalog.registry.get("a.made", "2.0") is not None
    again = await sync(catalog, declared)
    assert again.in_sync and len(again.unchanged) == 3

    when = datetime(2024, 1, 1, tzinfo=UTC)
    await catalog.deprecate("a.made", "1.0", at=when)
    changed = [
        schema("a.made", "1.0", description="made (v1)", projections=("p1", "p2")),
        schema("a.made", "2.0", schema={"type": "object"}, previous_version="1.0"),
        schema("a.new", "1.0"),
    ]
    report = await sync(catalog, changed)
    assert [s.event_type for s in report.added] == ["a.new"]
    assert [(s.event_type, s.version) for s in report.updated] == [("a.made", "1.0")]
    assert [(d.event_type, d.version, d.kind) for d in report.drift] == [
        ("a.gone", "1.0", "missing_in_code"),
        ("a.made", "2.0", "schema_differs"),
    ]
    stored = {(s.event_type, s.version): s for s in await stored_schemas(catalog)}
    assert stored["a.made", "1.0"].description == "made (v1)"
    assert stored["a.made", "1.0"].projections == ("p1", "p2")
    assert stored["a.made", "1.0"].deprecated_at == when  # a deprecation made in the DB stays
    assert stored["a.made", "2.0"].schema == {"type": "object", "required": ["n"]}  # untouched
    assert ("a.gone", "1.0") in stored  # drift is reported, never deleted
    assert [s.version for s in await stored_schemas(catalog, "a.made")] == ["1.0", "2.0"]


async def test_a_log_of_its_own_is_counted_in_ranges_up_to_its_own_head(
    counted: tuple[FindCounter, AsyncDatabase[Document]], monkeypatch: Any
) -> None:
    """The ranges end at the head of the counter numbering that log, not the main one's
    (which would leave the whole log to the last, open range)."""
    monkeypatch.setattr(queries, "VERSION_COUNT_CHUNK", 2)
    listener, db = counted
    main = EventStore(db)
    own = EventStore(db, collection="app_events", sequence="app_events")
    await main.init()
    await own.init()
    await main.append("thing", "m", [NewEvent("thing.made", {})])
    await own.append("thing", "o", [NewEvent("thing.made", {}) for _ in range(7)])
    listener.sent.clear()
    assert await own.version_counts() == {("thing.made", "1.0"): 7}
    ranges = [
        c["pipeline"][0]["$match"]["sequence"]
        for c in listener.sent
        if c.get("aggregate") == "app_events"
    ]
    assert ranges == [
        {"$gt": 0, "$lte": 2},
        {"$gt": 2, "$lte": 4},
        {"$gt": 4, "$lte": 6},
        {"$gt": 6},
    ]
    assert await main.version_counts() == {("thing.made", "1.0"): 1}
