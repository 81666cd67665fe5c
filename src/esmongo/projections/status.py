"""Where each projection is, from any process: for the CLI, the dashboard and alerting.

Lag is given in events (head sequence - checkpoint) and in seconds (age of the first
event not yet applied); the seed's `projections.lag` target is 1 s, alert at 10 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import utc_now
from esmongo.metrics import (
    PROJECTION_DEAD_LETTERS,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
)
from esmongo.projections.checkpoints import Checkpoint, Checkpoints
from esmongo.projections.dead_letters import DeadLetters
from esmongo.projections.leases import Leases, LeaseState
from esmongo.store import EventStore


@dataclass(frozen=True)
class ProjectionStatus:
    """One projection's progress, lease and health."""

    name: str
    state: str
    """active (a live lease), idle (no live lease), blocked (STOP dead letter), never_run."""
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    owner: str | None
    lease_expires_at: datetime | None
    events_per_second: float
    dead_letters: int
    blocked_at: int | None
    generation: int
    updated_at: datetime | None
    inline: bool = False
    """Applied by the appends' transactions (esmongo.projections.inline)."""

    def to_dict(self) -> Document:
        return {
            "name": self.name,
            "state": self.state,
            "position": self.position,
            "head": self.head,
            "lagEvents": self.lag_events,
            "lagSeconds": round(self.lag_seconds, 3),
            "owner": self.owner,
            "leaseExpiresAt": self.lease_expires_at,
            "eventsPerSecond": self.events_per_second,
            "deadLetters": self.dead_letters,
            "blockedAt": self.blocked_at,
            "generation": self.generation,
            "updatedAt": self.updated_at,
            "inline": self.inline,
        }


def _state(checkpoint: Checkpoint | None, lease: LeaseState | None, now: datetime) -> str:
    if checkpoint is None:
        return "never_run"
    if checkpoint.blocked_at is not None:
        return "blocked"
    if lease and lease.owner and lease.expires_at and lease.expires_at > now:
        return "active"
    return "idle"


async def projection_status(
    store: EventStore,
    names: Sequence[str] | None = None,
    *,
    update_metrics: bool = False,
) -> list[ProjectionStatus]:
    """Status of the named projections (default: every one with a checkpoint).

    The head and the first unapplied event come from `store` (its active log, then the
    archive), so the lag stays true after a migration switch or an archive.
    With `update_metrics`, the Prometheus lag and dead-letter gauges are set from it
    (for a process that serves /metrics without running the projections itself).
    """
    if not isinstance(store, EventStore):
        raise TypeError(
            f"projection_status takes the EventStore (it reads the head and the events "
            f"through it), not {type(store).__name__}"
        )
    db = store.db.with_options(codec_options=CODEC_OPTIONS)
    checkpoints, leases, dead = Checkpoints(db), Leases(db), DeadLetters(db)
    if names is None:
        names = sorted(
            [doc["_id"] async for doc in checkpoints.collection.find({}, {"_id": 1})],
        )
    head = await store.head_sequence()
    now = utc_now()
    result = []
    for name in names:
        checkpoint = await checkpoints.get(name)
        lease = await leases.get(name)
        position = await checkpoints.effective(checkpoint) if checkpoint else 0
        inline = bool(checkpoint and checkpoint.inline and (await store.inline.state(name)).inline)
        lag = max(0, head - position)
        lag_seconds = 0.0
        if lag:
            first = await store.event_at(position + 1)
            if first is not None:
                lag_seconds = max(0.0, (now - first.timestamp).total_seconds())
        stats = checkpoint.stats if checkpoint else {}
        status = ProjectionStatus(
            name=name,
            state=_state(checkpoint, lease, now),
            position=position,
            head=head,
            lag_events=lag,
            lag_seconds=lag_seconds,
            owner=lease.owner if lease else None,
            lease_expires_at=lease.expires_at if lease else None,
            events_per_second=float(stats.get("eventsPerSecond", 0.0)),
            dead_letters=await dead.count(name),
            blocked_at=checkpoint.blocked_at if checkpoint else None,
            generation=checkpoint.generation if checkpoint else 0,
            updated_at=checkpoint.updated_at if checkpoint else None,
            inline=inline,
        )
        if update_metrics:
            PROJECTION_LAG_EVENTS.labels(name).set(status.lag_events)
            PROJECTION_LAG_SECONDS.labels(name).set(status.lag_seconds)
            PROJECTION_DEAD_LETTERS.labels(name).set(status.dead_letters)
        result.append(status)
    return result
