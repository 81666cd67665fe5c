"""The schema registry, the stored catalog, and upcasters applied on read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import Aggregate, EventStore, NewEvent, Repository, SchemaRegistry, Upcasters, applies
from esmongo.codec import Document
from esmongo.errors import SchemaError, UnknownEventTypeError
from esmongo.model import EventLike
from esmongo.schema import EventSchema, SchemaCatalog

USER = EventSchema(
    "user.registered",
    "1.0",
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "address": {
                "type": "object",
                "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            },
        },
        "additionalProperties": False,
    },
    description="A user signed up",
    projections=("users_read",),
)


# ---- registry (pure) ------------------------------------------------------------------


def test_registry_validates_against_the_schema_of_type_and_version() -> None:
    registry = SchemaRegistry([USER])
    assert registry.violations("user.registered", "1.0", {"name": "Ann"}) == []
    (violation,) = registry.violations(
        "user.registered", "1.0", {"name": "Ann", "address": {"zip": "ABC"}}
    )
    assert (violation.path, violation.rule) == ("$.address.zip", "pattern")
    assert "$.address.zip" in str(violation)
    assert "pattern" in str(violation)
    extra = registry.violations("user.registered", "1.0", {"name": "Ann", "age": 3})
    assert [(v.path, v.rule) for v in extra] == [("$", "additionalProperties")]
    assert "'age'" in extra[0].message


def test_registry_without_schema_accepts_unless_strict() -> None:
    assert SchemaRegistry([USER]).violations("other", "1.0", {"x": 1}) == []
    assert SchemaRegistry([USER]).violations("user.registered", "2.0", {}) == []
    strict = SchemaRegistry([USER], strict=True)
    with pytest.raises(UnknownEventTypeError, match=r"user\.registered v2\.0"):
        strict.violations("user.registered", "2.0", {})
    with pytest.raises(UnknownEventTypeError, match="other"):
        strict.violations("other", "1.0", {})


def test_registry_same_schema_again_is_a_no_op_and_another_is_refused() -> None:
    registry = SchemaRegistry([USER])
    deprecated = EventSchema(
        USER.event_type, USER.version, dict(USER.schema), deprecated_at=datetime.now(UTC)
    )
    registry.add(deprecated)  # same JSON Schema: metadata may change
    assert len(registry) == 1
    assert registry.get("user.registered", "1.0") == deprecated
    other = EventSchema(USER.event_type, USER.version, {"type": "object"})
    with pytest.raises(SchemaError, match="already registered"):
        registry.add(other)
    assert registry.get("user.registered", "1.0") == deprecated
    # The validator is still the first schema's.
    assert registry.violations("user.registered", "1.0", {})


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "strnig"},
        {"type": "object", "required": "name"},
        {"properties": {"a": {"minLength": -1}}},
    ],
)
def test_broken_json_schema_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="invalid JSON Schema"):
        SchemaRegistry([EventSchema("x", "1.0", broken)])


def test_registry_iterates_in_type_and_version_order() -> None:
    registry = SchemaRegistry(
        [EventSchema("b", "1.0", {}), EventSchema("a", "2.0", {}), EventSchema("a", "1.0", {})]
    )
    assert [(s.event_type, s.version) for s in registry] == [
        ("a", "1.0"),
        ("a", "2.0"),
        ("b", "1.0"),
    ]


# ---- catalog (stored) -----------------------------------------------------------------


@pytest.fixture
async def catalog(db: AsyncDatabase[Document]) -> SchemaCatalog:
    catalog = SchemaCatalog(db, SchemaRegistry())
    await catalog.init()
    return catalog


async def test_catalog_registers_once_and_refuses_another_schema(
    catalog: SchemaCatalog, db: AsyncDatabase[Document]
) -> None:
    assert await catalog.register(USER) is True
    assert await catalog.register(USER) is False
    assert await db["event_schemas"].count_documents({}) == 1
    other = EventSchema(USER.event_type, USER.version, {"type": "object"})
    with pytest.raises(SchemaError, match="already registered"):
        await catalog.register(other)
    stored = await db["event_schemas"].find_one({})
    assert stored is not None
    assert stored["schema"] == dict(USER.schema)
    assert stored["description"] == "A user signed up"
    assert stored["projections"] == ["users_read"]
    assert isinstance(stored["createdAt"], datetime)
    # A new version is a new entry.
    v2 = EventSchema(USER.event_type, "2.0", {"type": "object"}, previous_version="1.0")
    assert await catalog.register_all([USER, v2]) == 1
    assert catalog.registry.get("user.registered", "2.0") == v2


async def test_catalog_refuses_a_broken_schema_and_stores_nothing(
    catalog: SchemaCatalog, db: AsyncDatabase[Document]
) -> None:
    with pytest.raises(SchemaError):
        await catalog.register(EventSchema("x", "1.0", {"type": 12}))
    assert await db["event_schemas"].count_documents({}) == 0
    assert len(catalog.registry) == 0


async def test_concurrent_registrations_of_different_schemas_have_one_winner(
    db: AsyncDatabase[Document],
) -> None:
    """Two processes (two registries) register different schemas for one (type, version)."""
    catalogs = [SchemaCatalog(db, SchemaRegistry()) for _ in range(4)]
    await catalogs[0].init()
    schemas = [EventSchema("x", "1.0", {"type": "object", "title": f"n{i}"}) for i in range(4)]
    results = await asyncio.gather(
        *[c.register(s) for c, s in zip(catalogs, schemas, strict=True)], return_exceptions=True
    )
    assert results.count(True) == 1
    assert all(isinstance(r, SchemaError) for r in results if r is not True)
    stored = await db["event_schemas"].find_one({})
    assert stored is not None
    winner = results.index(True)
    assert stored["schema"] == schemas[winner].schema
    assert await db["event_schemas"].count_documents({}) == 1


async def test_catalog_load_and_deprecate(
    catalog: SchemaCatalog, db: AsyncDatabase[Document]
) -> None:
    await catalog.register_all([USER, EventSchema("order.placed", "1.0", {"type": "object"})])
    at = datetime(2025, 1, 1, tzinfo=UTC)
    await catalog.deprecate("user.registered", "1.0", at)
    with pytest.raises(SchemaError, match="not registered"):
        await catalog.deprecate("user.registered", "9.0")
    fresh = await SchemaCatalog(db, SchemaRegistry(strict=True)).load()
    assert [(s.event_type, s.version) for s in fresh] == [
        ("order.placed", "1.0"),
        ("user.registered", "1.0"),
    ]
    loaded = fresh.get("user.registered", "1.0")
    assert loaded is not None
    assert loaded.deprecated_at == at
    assert loaded.projections == ("users_read",)
    # The loaded registry validates as the original would.
    assert fresh.violations("user.registered", "1.0", {}) != []


async def test_catalog_keeps_json_schema_keywords_with_a_dollar(
    catalog: SchemaCatalog, db: AsyncDatabase[Document]
) -> None:
    schema = EventSchema(
        "ref.used",
        "1.0",
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"money": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"}},
            "type": "object",
            "properties": {"amount": {"$ref": "#/$defs/money"}},
        },
    )
    assert await catalog.register(schema) is True
    assert await catalog.register(schema) is False
    fresh = await SchemaCatalog(db, SchemaRegistry()).load()
    (violation,) = fresh.violations("ref.used", "1.0", {"amount": "1.5"})
    assert violation.path == "$.amount"


# ---- upcasters ------------------------------------------------------------------------


def v1_to_v2(data: Mapping[str, Any]) -> Mapping[str, Any]:
    first, _, last = data["name"].partition(" ")
    return {"first": first, "last": last}


def v2_to_v3(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**data, "email": None}


def upcasters() -> Upcasters:
    ups = Upcasters()
    ups.register("user.registered", "1.0", "2.0", v1_to_v2)
    ups.upcaster("user.registered", "2.0", "3.0")(v2_to_v3)
    return ups


def test_upcaster_loops_and_duplicates_are_refused() -> None:
    ups = upcasters()
    with pytest.raises(SchemaError, match="loop"):
        ups.register("user.registered", "3.0", "1.0", v2_to_v3)
    with pytest.raises(SchemaError, match="loop"):
        ups.register("user.registered", "3.0", "2.0", v2_to_v3)
    with pytest.raises(SchemaError, match="already registered"):
        ups.register("user.registered", "1.0", "4.0", v2_to_v3)
    with pytest.raises(SchemaError, match="change the version"):
        ups.register("user.registered", "4.0", "4.0", v2_to_v3)
    # The refused steps left nothing behind: the chain still ends at 3.0.
    assert ups.latest("user.registered", "1.0") == "3.0"
    assert ups.latest("user.registered", "3.0") == "3.0"
    assert ups.latest("other", "1.0") == "1.0"
    # A step that does not close a loop is still accepted.
    ups.register("user.registered", "3.0", "4.0", v2_to_v3)
    assert ups.latest("user.registered", "1.0") == "4.0"


@pytest.fixture
async def upcasting_store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db, upcasters=upcasters())
    await store.init()
    return store


async def test_upcasters_chain_on_every_read_path(
    upcasting_store: EventStore, db: AsyncDatabase[Document]
) -> None:
    store = upcasting_store
    meta = {"correlationId": "c1"}
    await store.append(
        "user",
        "u1",
        [
            NewEvent("user.registered", {"name": "Ann Lee"}, "1.0", meta),
            NewEvent("user.registered", {"first": "Bo", "last": "Ek"}, "2.0", meta),
            NewEvent("user.registered", {"first": "Cy", "last": "", "email": "c@x"}, "3.0", meta),
            NewEvent("user.renamed", {"name": "Di"}, "1.0", meta),
        ],
    )
    expected = [
        ("3.0", {"first": "Ann", "last": "Lee", "email": None}, "1.0"),
        ("3.0", {"first": "Bo", "last": "Ek", "email": None}, "2.0"),
        ("3.0", {"first": "Cy", "last": "", "email": "c@x"}, None),
        ("1.0", {"name": "Di"}, None),
    ]
    reads = {
        "stream": [e async for e in store.read_stream("user", "u1")],
        "all": [e async for e in store.read_all()],
        "type": [e async for e in store.read_by_type(["user.registered", "user.renamed"])],
        "correlation": [e async for e in store.read_by_correlation("c1")],
    }
    for name, events in reads.items():
        got = [(e.event_version, dict(e.data), e.upcast_from) for e in events]
        assert got == expected, name
    # Stored documents are never rewritten.
    stored = [d async for d in db["events"].find({}, sort=[("sequence", 1)])]
    assert [(d["eventVersion"], d["data"]) for d in stored] == [
        ("1.0", {"name": "Ann Lee"}),
        ("2.0", {"first": "Bo", "last": "Ek"}),
        ("3.0", {"first": "Cy", "last": "", "email": "c@x"}),
        ("1.0", {"name": "Di"}),
    ]


class User(Aggregate):
    aggregate_type = "user"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.first = ""
        self.email: str | None = "unset"

    @applies("user.registered")
    def _registered(self, event: EventLike) -> None:
        self.first = event.data["first"]  # only understands v3
        self.email = event.data["email"]


async def test_aggregates_replay_upcast_events(upcasting_store: EventStore) -> None:
    await upcasting_store.append("user", "u1", [NewEvent("user.registered", {"name": "Ann Lee"})])
    user = await Repository(upcasting_store, User).load("u1")
    assert (user.first, user.email, user.version) == ("Ann", None, 1)
