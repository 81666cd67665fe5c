"""What `esmongo check` found: one Finding per broken invariant, at a place, and whether
`--repair` can fix it without losing anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str, int, int | None], None]
"""`progress(phase, done, total)`: how far a pass got (total None when unknown)."""

MAX_LISTED = 100
"""Findings listed per invariant; the rest are counted (`CheckReport.unlisted`)."""

INVARIANTS = (
    "sequence",
    "counter",
    "writable",
    "streams",
    "sealed",
    "checkpoints",
    "idempotency",
    "snapshots",
    "chain",
)


@dataclass(frozen=True)
class Fix:
    """How `repair` fixes a finding: a kind and what it needs to know."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    invariant: str
    """One of INVARIANTS."""
    problem: str
    """What is wrong, in a sentence."""
    where: dict[str, Any]
    """sequence / stream / collection / projection / key: where to look."""
    fix: Fix | None = None
    """Set when `--repair` can fix it."""
    reason: str = ""
    """What the repair does, or why there is none."""

    @property
    def repairable(self) -> bool:
        return self.fix is not None

    def line(self) -> str:
        """One line for a terminal or a log."""
        place = " ".join(f"{k}={_short(v)}" for k, v in self.where.items())
        tag = "repairable" if self.repairable else "not repairable"
        return f"{self.invariant}: {self.problem} [{place}] ({tag}: {self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "problem": self.problem,
            "where": {k: _short(v) for k, v in self.where.items()},
            "repairable": self.repairable,
            "reason": self.reason,
        }


def _short(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return "/".join(str(v) for v in value)
    return value


@dataclass
class CheckReport:
    active: str
    """The active events collection."""
    sealed: list[str] = field(default_factory=list)
    head: int = 0
    """The highest sequence in the active log and the archive."""
    counter: int | None = None
    events: int = 0
    """Events read in the active log and the archive."""
    streams: int = 0
    findings: list[Finding] = field(default_factory=list)
    unlisted: dict[str, int] = field(default_factory=dict)
    """Per invariant: findings beyond MAX_LISTED, counted but not listed."""
    elapsed_s: float = 0.0
    max_listed: int = MAX_LISTED

    @property
    def ok(self) -> bool:
        return not self.findings and not self.unlisted

    def add(self, finding: Finding) -> None:
        listed = sum(1 for f in self.findings if f.invariant == finding.invariant)
        if listed < self.max_listed:
            self.findings.append(finding)
        else:
            self.unlisted[finding.invariant] = self.unlisted.get(finding.invariant, 0) + 1

    def passed(self) -> list[str]:
        """The invariants with no finding."""
        failed = {f.invariant for f in self.findings} | set(self.unlisted)
        return [name for name in INVARIANTS if name not in failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "activeCollection": self.active,
            "sealedCollections": self.sealed,
            "head": self.head,
            "counter": self.counter,
            "events": self.events,
            "streams": self.streams,
            "passed": self.passed(),
            "findings": [f.to_dict() for f in self.findings],
            "unlisted": self.unlisted,
            "elapsedSeconds": round(self.elapsed_s, 3),
        }
