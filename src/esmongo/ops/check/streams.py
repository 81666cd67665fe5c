"""Every stream's versions 1..n, in one collection only; snapshots at versions that exist.

One merge pass over the unique (aggregateType, aggregateId, aggregateVersion) index of the
active log and the archive, with the snapshots (same order) alongside: memory holds one
stream's counters, never a map of all streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from esmongo.codec import Document
from esmongo.ops.check.report import CheckReport, Finding, Fix, Progress
from esmongo.ops.check.scope import (
    BATCH,
    EVENT_FIELDS,
    PAUSE_POINTS,
    Scope,
    cursor,
    merge,
)
from esmongo.store.collections import SNAPSHOTS

Stream = tuple[str, str]
ORDER = [("aggregateType", 1), ("aggregateId", 1), ("aggregateVersion", 1)]
SAME = (
    "_id",
    "sequence",
    "eventId",
    "aggregateType",
    "aggregateId",
    "aggregateVersion",
    "eventType",
    "metadata",
    "timestamp",
)
"""What two copies of one event share even when a migration transformed one of them."""


@dataclass
class Walk:
    """One stream, its versions seen in order."""

    stream: Stream
    last: int = 0
    gap: str | None = None
    twice: bool = False
    collections: set[str] = field(default_factory=set)
    snapshot: int | None = None
    snapshot_found: bool = False

    def see(self, name: str, doc: Document) -> None:
        version = int(doc["aggregateVersion"])
        if version == self.last:
            self.twice = True
        elif version != self.last + 1 and self.gap is None:
            self.gap = f"goes from version {self.last} to {version} at #{doc['sequence']}"
        self.last = max(self.last, version)
        self.collections.add(name)
        self.snapshot_found |= version == self.snapshot

    @property
    def split(self) -> bool:
        return len(self.collections) > 1 or self.twice


def _key(doc: Document) -> tuple[Any, ...]:
    return (doc["aggregateType"], doc["aggregateId"], doc.get("aggregateVersion", 0))


async def walk(scope: Scope, stream: Stream, snapshot: int | None = None) -> Walk:
    """A stream's versions read again, now (to confirm a finding of the pass)."""
    query = {"aggregateType": stream[0], "aggregateId": stream[1]}
    sources = [cursor(c, query, ORDER, EVENT_FIELDS) for c in scope.logs]
    names = [c.name for c in scope.logs]
    state = Walk(stream, snapshot=snapshot)
    async for index, doc in merge(sources, _key):
        state.see(names[index], doc)
    return state


@dataclass
class StreamPass:
    scope: Scope
    report: CheckReport
    progress: Progress | None = None
    total: int | None = None
    suspects: list[Walk] = field(default_factory=list)
    orphans: list[Document] = field(default_factory=list)
    fixes: dict[Stream, Fix | None] = field(default_factory=dict)
    """Streams in two collections, and how to repair each (None: not repairable)."""

    async def run(self) -> None:
        names = [c.name for c in self.scope.logs]
        sources = [cursor(c, {}, ORDER, EVENT_FIELDS) for c in self.scope.logs]
        snapshots = cursor(
            self.scope.db[SNAPSHOTS],
            {},
            [("aggregateType", 1), ("aggregateId", 1)],
            {"aggregateType": 1, "aggregateId": 1, "version": 1},
        )
        snap = await anext(snapshots, None)
        state: Walk | None = None
        seen = 0
        async for index, doc in merge(sources, _key):
            stream = (doc["aggregateType"], doc["aggregateId"])
            if state is None or state.stream != stream:
                if state is not None:
                    self._finish(state)
                state = Walk(stream)
                while snap is not None and _key(snap)[:2] < stream:
                    self._orphan(snap)
                    snap = await anext(snapshots, None)
                if snap is not None and _key(snap)[:2] == stream:
                    state.snapshot = int(snap["version"])
                    snap = await anext(snapshots, None)
            state.see(names[index], doc)
            seen += 1
            if (hook := PAUSE_POINTS.get("streams:event")) is not None:
                await hook()
            if self.progress is not None and seen % BATCH == 0:
                self.progress("streams", seen, self.total)
        if state is not None:
            self._finish(state)
        while snap is not None:
            self._orphan(snap)
            snap = await anext(snapshots, None)
        await snapshots.aclose()
        if self.progress is not None:
            self.progress("streams", seen, self.total)
        await self._confirm()

    def _finish(self, state: Walk) -> None:
        self.report.streams += 1
        bad_snapshot = state.snapshot is not None and not state.snapshot_found
        if state.gap or state.split or bad_snapshot:
            if len(self.suspects) < self.report.max_listed * 3:
                self.suspects.append(state)
            else:
                self.report.unlisted["streams"] = self.report.unlisted.get("streams", 0) + 1

    def _orphan(self, snap: Document) -> None:
        if len(self.orphans) < self.report.max_listed:
            self.orphans.append(snap)
        else:
            self.report.unlisted["snapshots"] = self.report.unlisted.get("snapshots", 0) + 1

    async def _confirm(self) -> None:
        """Read each suspect stream again: an append or archive may have been under way."""
        for suspect in self.suspects:
            state = await walk(self.scope, suspect.stream, suspect.snapshot)
            where = {"stream": state.stream, "collections": sorted(state.collections)}
            if state.gap:
                self.report.add(
                    Finding(
                        "streams",
                        f"{state.stream[0]}/{state.stream[1]} {state.gap}",
                        where,
                        reason="events of the stream are missing: if a sealed collection "
                        "holds them, repair that first; otherwise restore from a backup",
                    )
                )
            if state.split:
                fix, reason = await dedupe_fix(self.scope, state.stream)
                self.fixes[state.stream] = fix
                self.report.add(
                    Finding(
                        "streams",
                        f"{state.stream[0]}/{state.stream[1]} is in both "
                        f"{self.scope.active} and {self.scope.archive}",
                        where,
                        fix=fix,
                        reason=reason,
                    )
                )
            if state.snapshot is not None and not state.snapshot_found:
                self._snapshot(state.stream, state.snapshot, state.last)
        for snap in self.orphans:
            stream = (snap["aggregateType"], snap["aggregateId"])
            if not await walk_has(self.scope, stream, int(snap["version"])):
                self._snapshot(stream, int(snap["version"]), 0)

    def _snapshot(self, stream: Stream, version: int, last: int) -> None:
        held = f"the stream ends at version {last}" if last else "the stream has no event"
        self.report.add(
            Finding(
                "snapshots",
                f"the snapshot of {stream[0]}/{stream[1]} is at version {version}, but {held}",
                {"stream": stream, "version": version},
                fix=Fix("delete_snapshot", {"stream": stream, "version": version}),
                reason="delete it: a snapshot is only a cache, loads replay the events",
            )
        )


async def walk_has(scope: Scope, stream: Stream, version: int) -> bool:
    query = {"aggregateType": stream[0], "aggregateId": stream[1], "aggregateVersion": version}
    return bool(await scope.located(query))


def same_event(active: Document, archived: Document) -> bool:
    """Two copies of one event: equal, or the active one migrated from the archived one."""
    if any(active.get(name) != archived.get(name) for name in SAME):
        return False
    if active == archived:
        return True
    migration = active.get("migration") or {}
    return bool(migration) and migration.get("fromVersion") == archived.get("eventVersion")


async def _docs(scope: Scope, name: str, stream: Stream) -> AsyncGenerator[Document, None]:
    query = {"aggregateType": stream[0], "aggregateId": stream[1]}
    async for doc in cursor(scope.log[name], query, ORDER):
        yield doc


async def dedupe_fix(scope: Scope, stream: Stream) -> tuple[Fix | None, str]:
    """A stream in the active log and the archive can lose its active copies when the
    archive holds all of it (versions 1..n, recorded in archived_streams) and every active
    copy is the same event as the archived one. Streams through both, a pair at a time."""
    record = await scope.log[scope.archived_streams].find_one(
        {"_id": {"type": stream[0], "id": stream[1]}}
    )
    if record is None:
        return None, (
            f"{scope.archived_streams} has no record of it: decide by hand where it belongs"
        )
    async with contextlib.aclosing(_docs(scope, scope.archive, stream)) as archived:
        return await _compare_copies(scope, stream, record, archived)


async def _compare_copies(
    scope: Scope, stream: Stream, record: Document, archived: AsyncIterator[Document]
) -> tuple[Fix | None, str]:
    last = 0
    async for doc in _docs(scope, scope.active, stream):
        version = int(doc["aggregateVersion"])
        copy = None
        while (candidate := await anext(archived, None)) is not None:
            if int(candidate["aggregateVersion"]) != last + 1:
                return None, f"the archive's copy is not whole (version {last + 1} missing)"
            last += 1
            if last == version:
                copy = candidate
                break
        if copy is None:
            return None, (
                f"version {version} is only in {scope.active}: the stream went on after it "
                "was archived; decide by hand"
            )
        if not same_event(doc, copy):
            return None, f"version {version} differs between the two copies"
    while (candidate := await anext(archived, None)) is not None:
        if int(candidate["aggregateVersion"]) != last + 1:
            return None, f"the archive's copy is not whole (version {last + 1} missing)"
        last += 1
    if last != int(record.get("version", -1)):
        return (
            None,
            f"the archive holds {last} versions but its record says {record.get('version')}",
        )
    return Fix("dedupe_stream", {"stream": stream}), (
        f"delete the copies in {scope.active}: the archive holds the same events, whole"
    )
