"""The global sequence: every number up to the head once in the active log or the archive,
and every event of a sealed collection there too. One merge pass over the `sequence`
index of every collection; memory holds one document per collection plus what was found.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

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

LOST = "not in any sealed collection either: restore these events from a backup"
Stream = tuple[str, str]


@dataclass
class Duplicates:
    """Sequences held twice, grouped by stream (a stream in two collections is one entry)."""

    stream: Stream
    collections: set[str]
    first: int
    last: int
    count: int = 0
    same_events: bool = True


@dataclass
class SequencePass:
    scope: Scope
    report: CheckReport
    bound: int
    """Check sequences 1..bound (the counter, or a higher sequence found anywhere)."""
    settle_s: float = 1.0
    progress: Progress | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    sealed_only: list[tuple[str, Document]] = field(default_factory=list)
    duplicates: dict[Stream, Duplicates] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)
    head: int = 0
    """The highest sequence the pass saw in the logs: a gap above it may be an append
    still committing (appends commit in sequence order, so nothing below can be)."""

    async def run(self) -> None:
        scope, cap = self.scope, self.report.max_listed
        names = [*(c.name for c in scope.logs), *scope.sealed]
        logs = len(scope.logs)
        query = {"sequence": {"$lte": self.bound}}
        sources = [
            cursor(scope.log[name], query, [("sequence", 1)], EVENT_FIELDS) for name in names
        ]
        previous = 0
        group: list[tuple[int, Document]] = []
        async for index, doc in merge(sources, lambda d: (d["sequence"],)):
            sequence = int(doc["sequence"])
            if group and sequence != group[0][1]["sequence"]:
                self._judge(group, names, logs)
                group = []
            if sequence > previous + 1:
                self._gap(previous + 1, sequence - 1, cap)
            previous = max(previous, sequence)
            group.append((index, doc))
            if index < logs:
                self.head = sequence
                self.report.events += 1
                if (hook := PAUSE_POINTS.get("sequence:event")) is not None:
                    await hook()
                if self.progress is not None and self.report.events % BATCH == 0:
                    self.progress("sequence", sequence, self.bound)
        if group:
            self._judge(group, names, logs)
        if previous < self.bound:
            self._gap(previous + 1, self.bound, cap)
        if self.progress is not None:
            self.progress("sequence", self.bound, self.bound)
        self.report.head = self.head
        await self._confirm()

    def _gap(self, low: int, high: int, cap: int) -> None:
        if len(self.missing) < cap:
            self.missing.append((low, high))
        else:
            self.overflow["sequence"] = self.overflow.get("sequence", 0) + 1

    def _judge(self, group: list[tuple[int, Document]], names: list[str], logs: int) -> None:
        held = [(names[i], d) for i, d in group if i < logs]
        sealed = [(names[i], d) for i, d in group if i >= logs]
        sequence = int(group[0][1]["sequence"])
        if not held:
            if len(self.sealed_only) < self.report.max_listed:
                self.sealed_only.append(sealed[0])
            else:
                self.overflow["sealed"] = self.overflow.get("sealed", 0) + 1
            return
        first = held[0][1]
        for name, doc in sealed:
            if doc["eventId"] != first["eventId"]:
                self.report.add(
                    Finding(
                        "sealed",
                        f"#{sequence} in sealed {name} is event {doc['eventId']}, but "
                        f"{held[0][0]} holds {first['eventId']} at that sequence",
                        {"sequence": sequence, "collection": name},
                        reason="two events claim one sequence: the sealed one is an "
                        "acknowledged event that is lost from the log; re-append it by hand",
                    )
                )
        if len(held) > 1:
            stream = (str(first["aggregateType"]), str(first["aggregateId"]))
            dup = self.duplicates.get(stream)
            if dup is None:
                if len(self.duplicates) >= self.report.max_listed:
                    self.overflow["sequence"] = self.overflow.get("sequence", 0) + 1
                    return
                dup = self.duplicates[stream] = Duplicates(stream, set(), sequence, sequence)
            dup.collections.update(name for name, _ in held)
            dup.last, dup.count = sequence, dup.count + 1
            dup.same_events &= all(d["eventId"] == first["eventId"] for _, d in held)

    async def _confirm(self) -> None:
        """Drop what an append or an archive committing during the pass explains."""
        self.missing = await self._still_missing(self.missing)
        late = [(lo, hi) for lo, hi in self.missing if hi > self.head]
        if late:  # perhaps an append still committing: give it time, once
            await asyncio.sleep(self.settle_s)
            early = [(lo, hi) for lo, hi in self.missing if hi <= self.head]
            self.missing = early + await self._still_missing(late)
        for low, high in self.missing:
            span = f"#{low}" if low == high else f"#{low}..#{high} ({high - low + 1} events)"
            self.report.add(
                Finding(
                    "sequence",
                    f"{span} missing from {self.scope.active} and {self.scope.archive}",
                    {"sequence": low if low == high else f"{low}-{high}"},
                    reason=LOST,
                )
            )
        for name, doc in self.sealed_only:
            if await self.scope.located({"sequence": doc["sequence"]}):
                continue
            await self._report_sealed_only(name, doc)
        for invariant, count in self.overflow.items():
            self.report.unlisted[invariant] = self.report.unlisted.get(invariant, 0) + count

    async def _still_missing(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        result = []
        for low, high in ranges:
            found = await self.scope.located({"sequence": {"$gte": low, "$lte": high}})
            at = low
            for _, doc in found:
                if doc["sequence"] > at:
                    result.append((at, int(doc["sequence"]) - 1))
                at = int(doc["sequence"]) + 1
            if at <= high:
                result.append((at, high))
        return result

    async def _report_sealed_only(self, name: str, doc: Document) -> None:
        sequence = int(doc["sequence"])
        stream = (str(doc["aggregateType"]), str(doc["aggregateId"]))
        version = int(doc["aggregateVersion"])
        where = {"sequence": sequence, "collection": name, "stream": stream, "version": version}
        fix, reason = await copy_back_fix(self.scope, name, doc)
        self.report.add(
            Finding(
                "sequence",
                f"#{sequence} missing from {self.scope.active} and {self.scope.archive} "
                f"(it is in sealed {name})",
                where,
                fix=fix,
                reason=reason,
            )
        )
        self.report.add(
            Finding(
                "sealed",
                f"event {doc['eventId']} (#{sequence}, {stream[0]}/{stream[1]} v{version}) is "
                f"only in sealed {name}",
                where,
                fix=fix,
                reason=reason,
            )
        )


async def copy_back_fix(scope: Scope, name: str, doc: Document) -> tuple[Fix | None, str]:
    """Whether an event found only in a sealed collection can be copied into the active log:
    not when its stream version is taken or its stream was archived."""
    stream = {"aggregateType": doc["aggregateType"], "aggregateId": doc["aggregateId"]}
    version = int(doc["aggregateVersion"])
    clash = await scope.located({**stream, "aggregateVersion": version})
    if clash:
        where, other = clash[0]
        return None, (
            f"version {version} of the stream is already #{other['sequence']} in {where}: "
            "two events claim it, decide by hand which one stands"
        )
    registry = scope.log[scope.archived_streams]
    if await registry.find_one(
        {"_id": {"type": stream["aggregateType"], "id": stream["aggregateId"]}}
    ):
        return None, "its stream is archived: copying it into the active log would split it"
    fix = Fix("copy_back", {"sequence": int(doc["sequence"]), "collection": name})
    return fix, f"copy it from {name} into {scope.active} (the counter taken, in a transaction)"
