"""The overview's figures, read once per page or per live update."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from esmongo.api.context import Services
from esmongo.events import utc_now
from esmongo.projections import DeadLetters, projection_status

RATE_WINDOW_S = 60


@dataclass(frozen=True)
class Figures:
    head: int
    rates: list[int]
    """Appends in each of the last RATE_WINDOW_S seconds, oldest first (estimates)."""
    projections: list[dict[str, Any]]
    dead_letters: int
    events: int
    archived: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "rates": self.rates,
            "rate": self.rates[-1] if self.rates else 0,
            "projections": self.projections,
            "deadLetters": self.dead_letters,
            "events": self.events,
            "archived": self.archived,
        }


def per_second(firsts: list[int | None], head: int) -> list[int]:
    """Appends between consecutive second marks; the last mark's open second ends at head."""
    bounds = [head + 1 if first is None else first for first in firsts]
    bounds.append(head + 1)
    return [max(0, b - a) for a, b in itertools.pairwise(bounds)]


async def figures(svc: Services, now: datetime | None = None) -> Figures:
    store = svc.bank.store
    now = now or utc_now()
    start = now.replace(microsecond=0) - timedelta(seconds=RATE_WINDOW_S - 1)
    marks = [start + timedelta(seconds=i) for i in range(RATE_WINDOW_S)]
    head = await store.head_sequence()
    firsts = await store.first_sequences_at(marks)
    names = [p.name for p in svc.projection_defs]
    statuses = await projection_status(store, names)
    projections = []
    for status in statuses:
        item = status.to_dict()
        task = svc.rebuilds.get(status.name)
        item["rebuilding"] = task is not None and not task.done()
        projections.append(item)
    return Figures(
        head=head,
        rates=per_second(firsts, head),
        projections=projections,
        dead_letters=await DeadLetters(svc.bank.db).count(),
        events=await store.events.estimated_document_count(),
        archived=await store.archive.events.estimated_document_count(),
    )
