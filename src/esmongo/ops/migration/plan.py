"""What a migration does: its steps, how they chain, and a dry run that writes nothing."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.ops.migration.errors import MigrationError
from esmongo.schema.registry import SchemaRegistry, version_chain

Transform = Callable[[Mapping[str, Any]], Mapping[str, Any]]
Progress = Callable[[int, int], None]
Planned = Callable[[str, str], tuple[list[str], str] | None]
"""For a stored (type, version): the migration ids it goes through and its new version,
or None when no migration applies to it."""
MAX_LISTED = 1000


@dataclass(frozen=True)
class Migration:
    """One step: events of `event_type` stored at `from_version` become `to_version`.

    Steps of one type chain (1.0 -> 2.0 -> 3.0). `transform` gets a copy of the event's
    data and returns the new data; it must be deterministic so that a resumed run writes
    what an uninterrupted one would.
    """

    id: str
    event_type: str
    from_version: str
    to_version: str
    transform: Transform


@dataclass(frozen=True)
class EventRef:
    """Which event: enough to find it and to say what it is."""

    sequence: int
    event_id: str
    event_type: str
    event_version: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> EventRef:
        return cls(
            doc.get("sequence", -1),
            doc.get("eventId", "?"),
            doc.get("eventType", "?"),
            doc.get("eventVersion", "?"),
            doc.get("aggregateType", "?"),
            doc.get("aggregateId", "?"),
            doc.get("aggregateVersion", -1),
        )

    def __str__(self) -> str:
        return (
            f"#{self.sequence} {self.event_type} v{self.event_version} "
            f"({self.aggregate_type}/{self.aggregate_id}@{self.aggregate_version}, {self.event_id})"
        )


@dataclass(frozen=True)
class Failure:
    event: EventRef
    error: str

    def __str__(self) -> str:
        return f"{self.event}: {self.error}"

    def to_document(self, target: str) -> Document:
        """One row of `esmongo_migration_failures`: every failure of a run is kept there."""
        return {"target": target, **dataclasses.asdict(self.event), "error": self.error}


@dataclass(frozen=True)
class Change:
    """How many events of one stored (type, version) the migration changes, and to what."""

    event_type: str
    from_version: str
    to_version: str
    count: int
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    event: EventRef
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    to_version: str


@dataclass
class DryRunReport:
    source: str
    total: int
    """Events in the source: all of them are copied."""
    changes: list[Change]
    samples: list[Sample]
    failures: list[Failure]
    failure_count: int

    @property
    def would_change(self) -> int:
        return sum(c.count for c in self.changes)


class MigrationPlan:
    """The steps, checked once (unique ids, one step per start, no loop), and the
    transformation of one document. Pure: no I/O, so every other step trusts it."""

    def __init__(
        self, migrations: Sequence[Migration], registry: SchemaRegistry | None = None
    ) -> None:
        self.migrations = list(migrations)
        self.registry = registry
        self._steps: dict[tuple[str, str], Migration] = {}
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("migration ids must be unique")
        for migration in self.migrations:
            key = (migration.event_type, migration.from_version)
            if key in self._steps:
                raise ValueError(f"two migrations start from {key[0]} v{key[1]}")
            if migration.from_version == migration.to_version:
                raise ValueError(f"migration {migration.id} does not change the version")
            self._steps[key] = migration
        for event_type, version in self._steps:
            if self.chain(event_type, version) is None:
                raise ValueError(f"migrations of {event_type} loop from v{version}")

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.migrations]

    def chain(self, event_type: str, version: str) -> list[Migration] | None:
        """The steps an event stored at `version` goes through; None when they loop."""
        return version_chain(self._steps, event_type, version)

    def planned(self, event_type: str, version: str) -> tuple[list[str], str] | None:
        """The migration ids an event stored at `version` goes through, and its new version."""
        steps = self.chain(event_type, version)
        return ([m.id for m in steps], steps[-1].to_version) if steps else None

    def transform(self, doc: Document, now: datetime) -> tuple[Document, bool]:
        """The document to write for a source document, and whether it changed.

        Raises whatever the transform raises, or MigrationError when its output is not
        valid for the new version.
        """
        steps = self.chain(doc["eventType"], doc["eventVersion"]) or []
        if not steps:
            return doc, False
        data: Mapping[str, Any] = doc["data"]
        for step in steps:
            data = step.transform(copy.deepcopy(data))
            if not isinstance(data, Mapping):
                raise MigrationError(f"migration {step.id} returned {type(data).__name__}")
        to_version = steps[-1].to_version
        if self.registry is not None:
            violations = self.registry.violations(doc["eventType"], to_version, data)
            if violations:
                details = "; ".join(str(v) for v in violations)
                raise MigrationError(f"invalid as {doc['eventType']} v{to_version}: {details}")
        out = dict(doc)
        out["data"] = dict(data)
        out["eventVersion"] = to_version
        out["migration"] = {
            "ids": [s.id for s in steps],
            "fromVersion": doc["eventVersion"],
            "migratedAt": now,
        }
        return out, True


async def count_changes(plan: MigrationPlan, source: AsyncCollection[Document]) -> list[Change]:
    """What would change, counted by one `$group` (no transform runs)."""
    types = sorted({m.event_type for m in plan.migrations})
    pipeline: list[Document] = [
        {"$match": {"eventType": {"$in": types}}},
        {"$group": {"_id": {"t": "$eventType", "v": "$eventVersion"}, "n": {"$sum": 1}}},
    ]
    changes = []
    async for doc in await source.aggregate(pipeline):
        event_type, version = doc["_id"]["t"], doc["_id"]["v"]
        steps = plan.chain(event_type, version) or []
        if steps:
            ids = tuple(s.id for s in steps)
            changes.append(Change(event_type, version, steps[-1].to_version, int(doc["n"]), ids))
    return sorted(changes, key=lambda c: (c.event_type, c.from_version))


async def dry_run(
    plan: MigrationPlan,
    source: AsyncCollection[Document],
    *,
    samples: int,
    batch_size: int,
    max_listed: int,
    progress: Progress | None = None,
) -> DryRunReport:
    """Run every transform on the events it targets, writing nothing: what would change
    (counts per type and version), a few before/after samples per (type, version), and
    every failure."""
    changes = await count_changes(plan, source)
    total_changes = sum(c.count for c in changes)
    now = utc_now()
    report = DryRunReport(source.name, await source.count_documents({}), changes, [], [], 0)
    done = 0
    for change in changes:
        query = {"eventType": change.event_type, "eventVersion": change.from_version}
        kept = 0
        async for doc in source.find(query):  # any order: no blocking sort
            done += 1
            try:
                out, _ = plan.transform(doc, now)
            except Exception as exc:
                report.failure_count += 1
                if len(report.failures) < max_listed:
                    report.failures.append(Failure(EventRef.of(doc), describe(exc)))
                continue
            if kept < samples:
                kept += 1
                report.samples.append(
                    Sample(EventRef.of(doc), doc["data"], out["data"], out["eventVersion"])
                )
            if progress is not None and done % batch_size == 0:
                progress(done, total_changes)
    if progress is not None:
        progress(done, total_changes)
    return report


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
