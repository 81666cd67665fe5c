"""Checks between the schemas and upcasters declared in code and what the database holds.

Two questions an operator asks before starting (or after deploying) a version:
- Can every event in the store still be read as the latest version of its type? A stored
  (type, version) whose upcaster chain does not end at the latest registered version would
  reach aggregates and projections in a shape they no longer handle.
- Does `event_schemas` match the catalog declared in code? Schemas are immutable once
  registered, so a difference is drift to report, never something to overwrite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.schema.catalog import SchemaCatalog
from esmongo.schema.registry import EventSchema, SchemaRegistry, Upcasters, validated_part
from esmongo.store import EventStore

VersionKey = tuple[tuple[int, int | str], ...]


def version_key(version: str) -> VersionKey:
    """Order versions by their numeric parts: "1.0" < "2.0" < "10.0" ("1.0-beta" sorts
    its non-numeric part after the numbers)."""
    parts: list[tuple[int, int | str]] = []
    for part in version.split("."):
        parts.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(parts)


def latest_version(versions: Iterable[str]) -> str | None:
    return max(versions, key=version_key, default=None)


# ---- every stored (type, version) can reach the latest version --------------------


@dataclass(frozen=True)
class StoredVersion:
    """How many events of one (type, version) the store holds."""

    event_type: str
    version: str
    count: int


@dataclass(frozen=True)
class UnreachableVersion:
    """Stored events that upcasting does not bring to the latest version of their type."""

    event_type: str
    version: str
    count: int
    reaches: str | None
    """Where its upcaster chain ends (None: the chain loops)."""
    latest: str

    def __str__(self) -> str:
        end = "a loop" if self.reaches is None else f"v{self.reaches}"
        return (
            f"{self.count} {self.event_type} v{self.version} event(s) upcast to {end}, "
            f"not to the latest v{self.latest}"
        )


async def stored_versions(store: EventStore) -> list[StoredVersion]:
    """Each distinct (eventType, eventVersion) in the store and its count, archived events
    included (they are read through the same upcasters): one `$group` per collection.

    This reads every event once (no index holds the version); run it at startup or in
    `esmongo schemas check`, not per request.
    """
    counts = await store.version_counts()
    found = [StoredVersion(t, v, n) for (t, v), n in counts.items()]
    return sorted(found, key=lambda s: (s.event_type, version_key(s.version)))


def latest_versions(
    registry: SchemaRegistry, upcasters: Upcasters, stored: Iterable[StoredVersion]
) -> dict[str, str]:
    """The latest version of each type: the highest registered one; for a type with no
    registered schema, the highest version its stored events reach by upcasting."""
    registered: dict[str, list[str]] = {}
    for schema in registry:
        registered.setdefault(schema.event_type, []).append(schema.version)
    reached: dict[str, list[str]] = {}
    for item in stored:
        reached.setdefault(item.event_type, []).append(
            upcasters.latest(item.event_type, item.version)
        )
    result: dict[str, str] = {}
    for event_type in set(registered) | set(reached):
        versions = registered.get(event_type) or reached[event_type]
        latest = latest_version(versions)
        assert latest is not None
        result[event_type] = latest
    return result


def check_versions(
    stored: Iterable[StoredVersion], registry: SchemaRegistry, upcasters: Upcasters
) -> list[UnreachableVersion]:
    """The stored versions whose upcaster chain does not end at their type's latest. Pure."""
    items = list(stored)
    latest = latest_versions(registry, upcasters, items)
    problems = []
    for item in items:
        target = latest[item.event_type]
        path = upcasters.path(item.event_type, item.version)
        reaches = None if path is None else (path[-1].to_version if path else item.version)
        if reaches != target:
            problems.append(
                UnreachableVersion(item.event_type, item.version, item.count, reaches, target)
            )
    return problems


async def unreachable_versions(
    store: EventStore, *, upcasters: Upcasters | None = None
) -> list[UnreachableVersion]:
    """Stored (type, version, count) that the upcasters (the store's, unless given) do not
    bring to the latest version registered in its schema registry. Empty when every event
    reads as latest. Giving `upcasters` checks a chain before the store is built with it."""
    chain = store.upcasters if upcasters is None else upcasters
    return check_versions(await stored_versions(store), store.registry, chain)


# ---- the catalog declared in code vs `event_schemas` --------------------------------

DriftKind = Literal["schema_differs", "missing_in_code"]


@dataclass(frozen=True)
class Drift:
    event_type: str
    version: str
    kind: DriftKind
    detail: str

    def __str__(self) -> str:
        return f"{self.event_type} v{self.version}: {self.kind} ({self.detail})"


@dataclass
class SyncReport:
    """What `sync` wrote (or would write, in a dry run) and what differs."""

    added: list[EventSchema] = field(default_factory=list)
    """Declared in code, not stored: registered."""
    updated: list[EventSchema] = field(default_factory=list)
    """Same JSON Schema, other description/projections/previous version: code wins."""
    unchanged: list[EventSchema] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    """Stored schemas that differ from code (left as stored: a registered schema is
    immutable) or that code no longer declares."""
    dry_run: bool = False

    @property
    def in_sync(self) -> bool:
        return not (self.added or self.updated or self.drift)


def normalized(value: Any) -> Any:
    """A JSON-like value with tuples as lists, so code and database copies compare equal."""
    if isinstance(value, Mapping):
        return {str(k): normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    return value


_DESCRIPTIVE = ("description", "projections", "previousVersion")


async def stored_schemas(
    catalog: SchemaCatalog, event_type: str | None = None
) -> list[EventSchema]:
    """The schemas in `event_schemas` (of one type, or all), by type then version."""
    query: Document = {} if event_type is None else {"eventType": event_type}
    found = [EventSchema.from_document(doc) async for doc in catalog.collection.find(query)]
    return sorted(found, key=lambda s: (s.event_type, version_key(s.version)))


async def sync(
    catalog: SchemaCatalog, declared: Iterable[EventSchema], *, dry_run: bool = False
) -> SyncReport:
    """Write the schemas declared in code to `event_schemas` and report drift.

    New (type, version): registered. Stored with the same JSON Schema: its description,
    projections and previous version are set from code. Stored with another JSON Schema,
    or stored but not declared: drift, left untouched. A deprecation made in the database
    is kept. The catalog's registry ends up holding every declared schema that is stored.
    """
    by_key: dict[tuple[str, str], EventSchema] = {}
    for schema in declared:
        key = (schema.event_type, schema.version)
        if key in by_key and normalized(by_key[key].schema) != normalized(schema.schema):
            raise ValueError(f"{key[0]} v{key[1]} is declared twice with different schemas")
        by_key[key] = schema
    stored = {(doc["eventType"], doc["version"]): doc async for doc in catalog.collection.find({})}
    report = SyncReport(dry_run=dry_run)
    for key in sorted(set(stored) - set(by_key), key=lambda k: (k[0], version_key(k[1]))):
        report.drift.append(Drift(*key, "missing_in_code", "stored but not declared in code"))
    for key in sorted(by_key, key=lambda k: (k[0], version_key(k[1]))):
        schema = by_key[key]
        doc = stored.get(key)
        if doc is None:
            report.added.append(schema)
            if not dry_run:
                await catalog.register(schema)
            continue
        if normalized(validated_part(doc["schema"])) != normalized(validated_part(schema.schema)):
            report.drift.append(
                Drift(*key, "schema_differs", "the stored JSON Schema is not the one in code")
            )
            continue
        wanted = schema.to_document()
        changes = {
            name: wanted[name]
            for name in _DESCRIPTIVE
            if normalized(doc.get(name)) != normalized(wanted[name])
        }
        if normalized(doc["schema"]) != normalized(schema.schema):  # annotations (x-personal)
            changes["schema"] = wanted["schema"]
        if schema.deprecated_at is not None and doc.get("deprecatedAt") is None:
            changes["deprecatedAt"] = schema.deprecated_at
        if changes:
            report.updated.append(schema)
            if not dry_run:
                await catalog.collection.update_one(
                    {"eventType": key[0], "version": key[1]},
                    {"$set": changes | {"updatedAt": utc_now()}},
                )
        else:
            report.unchanged.append(schema)
        if not dry_run:
            deprecated_at = doc.get("deprecatedAt") or schema.deprecated_at
            catalog.registry.add(dataclasses.replace(schema, deprecated_at=deprecated_at))
    return report
