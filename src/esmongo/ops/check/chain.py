"""The tamper-evident chain (esmongo.store.chain), walked in global order over the active
log and the archive: `esmongo verify`, and the `chain` step of `esmongo check`.

Streaming (one merge of two cursors, one document per collection in memory). Each event
is checked twice: its own content against its `hash` (an edited event), and its `prev`
against the hash of the event before it (a removed, moved or re-hashed one). The walk
stops at the counter as it was when it began: everything up to there has committed.

What a clean walk proves, and what it does not, is in docs/security.md: a writer who can
rewrite events can also recompute every later hash; an anchor (a head hash recorded
elsewhere, `--anchor SEQUENCE:HASH`) is what catches that.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops.check.report import MAX_LISTED, Progress
from esmongo.ops.check.scope import BATCH, Scope, cursor, merge
from esmongo.store.chain import HASH, PREV, SOURCE_HASH, link
from esmongo.store.collections import CHAIN_LINKS

Anchor = tuple[int, str]


SEQUENCE_KINDS = frozenset({"missing", "duplicate"})
"""Breaks that are also the sequence invariant's findings (esmongo.ops.check.sequence)."""


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    kind: str
    """missing, duplicate, edited, unlinked, stripped or anchor."""
    problem: str

    def line(self) -> str:
        return f"#{self.sequence}: {self.problem}"


@dataclass
class ChainReport:
    events: int = 0
    chained: int = 0
    """Events that carry a hash (those written before the chain existed do not)."""
    head: int = 0
    head_hash: str = ""
    breaks: list[ChainBreak] = field(default_factory=list)
    unlisted: int = 0
    anchors_checked: int = 0
    unlinked: int = 0
    """Events whose writer could not see the event before them (`prev` is ""): one that
    committed into a collection a migration was sealing (esmongo check copies it back)."""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_broken(self) -> int | None:
        return self.breaks[0].sequence if self.breaks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "chained": self.chained,
            "head": self.head,
            "headHash": self.head_hash,
            "firstBroken": self.first_broken,
            "breaks": [
                {"sequence": b.sequence, "kind": b.kind, "problem": b.problem} for b in self.breaks
            ],
            "unlisted": self.unlisted,
            "anchorsChecked": self.anchors_checked,
            "unlinked": self.unlinked,
            "elapsedSeconds": round(self.elapsed_s, 3),
        }


class _Walk:
    def __init__(self, report: ChainReport, max_listed: int, alternates: dict[int, set[str]]):
        self.report = report
        self.max_listed = max_listed
        self.alternates = alternates
        self.sequence = 0
        self.accepted: set[str] | None = {""}
        """The values the next event's `prev` may hold; None when unknown (after a gap)."""
        self.began = False
        """A chained event was seen: an unchained one after it is a stripped hash."""

    def broken(self, sequence: int, kind: str, problem: str) -> None:
        if len(self.report.breaks) < self.max_listed:
            self.report.breaks.append(ChainBreak(sequence, kind, problem))
        else:
            self.report.unlisted += 1

    def gap(self, first: int, last: int) -> None:
        span = f"#{first}" if first == last else f"#{first}..#{last}"
        self.broken(
            first,
            "missing",
            f"{last - first + 1} event(s) missing ({span}): removed, or never written",
        )
        self.accepted = None

    def event(self, doc: Document) -> None:
        sequence = int(doc["sequence"])
        if sequence == self.sequence:
            self.broken(sequence, "duplicate", "held twice (in the active log and the archive)")
            return
        if sequence > self.sequence + 1:
            self.gap(self.sequence + 1, sequence - 1)
        self.sequence = sequence
        stored = doc.get(HASH)
        if stored is None:
            if self.began:
                self.broken(
                    sequence, "stripped", "has no hash after the chain began: its hash was removed"
                )
            self.accepted = {""}
            return
        self.began = True
        self.report.chained += 1
        prev = str(doc.get(PREV, ""))
        if link(prev, doc) != stored:
            self.broken(
                sequence, "edited", "its content does not match its hash: the event was edited"
            )
        elif prev == "" and sequence > 1:
            # Its writer found no event before it. Accepting that weakens nothing: `prev`
            # is covered by the event's own hash, so setting it to "" rewrites this event's
            # hash, which the next event's link (or an anchor) then refuses.
            self.report.unlinked += 1
        elif self.accepted is not None and prev not in self.accepted:
            self.broken(
                sequence,
                "unlinked",
                f"does not link to #{sequence - 1}: an event was rewritten with a new hash, "
                "moved or replaced",
            )
        self.accepted = {stored, *self.alternates.get(sequence, ())}
        if SOURCE_HASH in doc:
            self.accepted.add(str(doc[SOURCE_HASH]))
        self.report.head, self.report.head_hash = sequence, stored


async def recorded_links(log: AsyncDatabase[Document]) -> dict[int, set[str]]:
    """Hashes that events once had and that a later event may link to: a migration's copy
    of a stream archived while it ran (esmongo.ops.migration.copy), dropped from the copy.
    `log`: the log database (esmongo.store.layout), where the links are kept."""
    found: dict[int, set[str]] = {}
    async for doc in log[CHAIN_LINKS].find({}):
        found.setdefault(int(doc["sequence"]), set()).add(str(doc[HASH]))
    return found


async def verify_chain(
    db: AsyncDatabase[Document],
    *,
    anchors: Iterable[Anchor] = (),
    progress: Progress | None = None,
    max_listed: int = MAX_LISTED,
    log: str | None = None,
) -> ChainReport:
    """Walk the chain of the main log, or of the log `log` (an events collection numbered by
    a sequence of its own: esmongo.ops.check.scope); every break (the first is where
    tampering began), and the head.

    A walk that finds a break walks again once: an archive that moved a stream from the
    active log to the archive while the two cursors passed it looks like a missing or a
    doubled event; tampering is still there the second time."""
    report = await _walk(db, list(anchors), progress, max_listed, log)
    if not report.ok:
        report = await _walk(db, list(anchors), progress, max_listed, log)
    return report


async def _walk(
    db: AsyncDatabase[Document],
    anchors: list[Anchor],
    progress: Progress | None,
    max_listed: int,
    log: str | None,
) -> ChainReport:
    started = time.perf_counter()
    scope = await Scope.of(db, log)
    counter = await scope.counter()
    bound = int((counter or {}).get("value", 0))
    report = ChainReport()
    walk = _Walk(report, max_listed, await recorded_links(scope.log))
    expected = dict(anchors)
    query = {"sequence": {"$lte": bound}}
    sources = [cursor(c, query, [("sequence", 1)]) for c in scope.logs]
    async for _, doc in merge(sources, lambda d: (d["sequence"],)):
        report.events += 1
        walk.event(doc)
        sequence = int(doc["sequence"])
        if sequence in expected:
            report.anchors_checked += 1
            if doc.get(HASH) != expected.pop(sequence):
                walk.broken(
                    sequence,
                    "anchor",
                    "does not hold the anchored hash: history before it was rewritten",
                )
        if progress is not None and report.events % BATCH == 0:
            progress("chain", report.events, bound)
    if walk.sequence < bound:
        walk.gap(walk.sequence + 1, bound)
    for sequence in sorted(expected):
        walk.broken(sequence, "anchor", "an anchored event that is not in the log")
    report.breaks.sort(key=lambda b: b.sequence)
    report.elapsed_s = time.perf_counter() - started
    return report


def parse_anchor(text: str) -> Anchor:
    """`SEQUENCE:HASH`, as `esmongo verify` prints the head."""
    sequence, _, digest = text.partition(":")
    if not sequence.isdigit() or int(sequence) < 1 or len(digest) != 64:
        raise ValueError(
            f"an anchor is SEQUENCE:HASH (a positive number, a 64-digit hash), not {text!r}"
        )
    try:
        int(digest, 16)
    except ValueError:
        raise ValueError(f"an anchor's hash is 64 hexadecimal digits, not {digest!r}") from None
    return int(sequence), digest.lower()
