"""The overview's figures, read once per page or per live update.

Events per second come from the head sequence, sampled once a second by this process
while someone looks (the sequence is gap-free, so the difference between two samples is
exactly what committed in between). Asking the store instead (events by timestamp over the
last minute) costs a read of every recent event: seconds on the embedded server at a few
thousand events per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from esmongo.api.context import Services
from esmongo.api.operations import rebuild_state
from esmongo.projections import DeadLetters, projection_status

RATE_WINDOW_S = 60
SAMPLE_EVERY_S = 1.0
IDLE_STOP_S = 300.0
"""The sampler stops when no one asked for figures for this long (and restarts on demand)."""


class RateSampler:
    """(monotonic time, head sequence) once a second, the last RATE_WINDOW_S + 1 of them."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW_S + 1)
        self.asked = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def rates(self) -> list[float]:
        """Events per second between consecutive samples, oldest first."""
        self.asked = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="console-rate-sampler")
        pairs = list(self.samples)
        return [
            max(0.0, (b[1] - a[1]) / (b[0] - a[0]))
            for a, b in itertools.pairwise(pairs)
            if b[0] > a[0]
        ]

    async def _run(self) -> None:
        while time.monotonic() - self.asked < IDLE_STOP_S:
            with contextlib.suppress(Exception):  # a failed sample is a gap, not an error
                self.samples.append((time.monotonic(), await self.svc.bank.store.head_sequence()))
            await asyncio.sleep(SAMPLE_EVERY_S)


@dataclass(frozen=True)
class Figures:
    head: int
    rates: list[float]
    """Events per second over the last RATE_WINDOW_S seconds, oldest first."""
    projections: list[dict[str, Any]]
    dead_letters: int
    events: int
    archived: int

    @property
    def rate(self) -> float:
        return self.rates[-1] if self.rates else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "rates": [round(r, 1) for r in self.rates],
            "rate": round(self.rate, 1),
            "projections": self.projections,
            "deadLetters": self.dead_letters,
            "events": self.events,
            "archived": self.archived,
        }


async def figures(svc: Services, sampler: RateSampler | None = None) -> Figures:
    store = svc.bank.store
    head = await store.head_sequence()
    names = [p.name for p in svc.projection_defs]
    statuses = await projection_status(store, names)
    projections = []
    for status in statuses:
        item = status.to_dict()
        item["rebuilding"], item["rebuildFailed"] = rebuild_state(svc, status.name)
        projections.append(item)
    active, archived = await store.event_counts()
    return Figures(
        head=head,
        rates=sampler.rates() if sampler else [],
        projections=projections,
        dead_letters=await DeadLetters(svc.bank.db).count(),
        events=active,
        archived=archived,
    )
