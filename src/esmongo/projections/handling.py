"""A projection's handlers run over a batch's events, before the batch commits.

Each handler is retried with backoff; one that keeps failing becomes a Failure (a dead
letter, written with the batch's checkpoint by esmongo.projections.batch_pipeline) and, by
the STOP policy, cuts the batch before its event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from esmongo.events import RecordedEvent
from esmongo.projections.dead_letters import Failure
from esmongo.projections.projection import FailurePolicy, Projection
from esmongo.projections.writes import WritePlan

log = logging.getLogger("esmongo.projections.batch_pipeline")
"""The pipeline's logger: the handlers' failures are logged under the name they always had."""


@dataclass
class HandledBatch:
    """What a batch commits: its events' merged writes, their failures, the checkpoint's
    new position, and the open dead letters its events resolve."""

    events: list[RecordedEvent]
    target: int
    plan: WritePlan = field(default_factory=WritePlan)
    failures: list[Failure] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    blocked_at: int | None = None


class HandlerFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


async def handle_batch(
    projection: Projection,
    name: str,
    events: list[RecordedEvent],
    target: int,
    open_dead: set[int],
) -> HandledBatch:
    """Run the handlers over `events` (up to `target`); `open_dead`: the sequences whose
    dead letters are still open, resolved when their event now succeeds."""
    batch = HandledBatch(events=[], target=target)
    for event in events:
        try:
            writes = await handle(projection, name, event)
        except HandlerFailed as failed:
            batch.failures.append(failed.failure)
            if projection.policy == FailurePolicy.STOP:
                batch.target = event.sequence - 1
                batch.blocked_at = event.sequence
                break
            batch.events.append(event)
            continue
        batch.plan.extend(writes)
        batch.events.append(event)
        if event.sequence in open_dead:
            batch.resolved.append(event.sequence)
    return batch


async def handle(projection: Projection, name: str, event: RecordedEvent) -> list[Any]:
    """The event's writes, its handler retried with backoff (HandlerFailed at the last)."""
    pause = projection.retry_backoff_s
    attempts = max(1, projection.max_attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await projection.apply(event)
        except Exception as exc:
            if attempt == attempts:
                log.error(
                    "projection %s: handler failed %d times on %s #%d (%s)",
                    name,
                    attempt,
                    event.event_type,
                    event.sequence,
                    exc,
                )
                raise HandlerFailed(Failure(event, exc, attempt)) from exc
            log.warning(
                "projection %s: handler failed on #%d (attempt %d/%d): %s",
                name,
                event.sequence,
                attempt,
                attempts,
                exc,
            )
            await asyncio.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")
