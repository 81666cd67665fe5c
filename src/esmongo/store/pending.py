"""An append on its way through a batch, and what the write path counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from esmongo.events import RecordedEvent
from esmongo.store.conditions import AppendCondition
from esmongo.store.requests import AppendRequest
from esmongo.store.unit_of_work import Writes


@dataclass
class WriteStats:
    """What the write path did since the store was made: for benchmarks and diagnostics."""

    transactions: int = 0
    """Transactions committed (with group commit, one per batch)."""
    appends: int = 0
    """Appends written by them (idempotent repeats and failures not counted)."""
    events: int = 0
    retries: int = 0
    """Transaction attempts that failed transiently (write conflicts) and were retried."""
    taken_out: int = 0
    """Appends taken out of a transaction by an error of their own (conflicts, duplicates)."""


@dataclass(eq=False)
class PendingAppend:
    """One caller's append (one or more streams, all or nothing) on its way through a batch."""

    requests: list[AppendRequest]
    future: asyncio.Future[list[list[RecordedEvent]]]
    keys: frozenset[Hashable]
    count: int
    size: int
    writes: Writes | None = None
    """Documents that commit with these events or not at all (esmongo.store.unit_of_work)."""
    condition: AppendCondition | None = None
    """Checked in the transaction, after the insert: it may refuse the append."""
    clear: Callable[[RecordedEvent], RecordedEvent] | None = None
    """An event as the caller gave it, personal fields in clear (esmongo.store.personal):
    what inline projections fold; None when nothing was encrypted."""
    heads: list[int] = field(default_factory=list)
    """For each request, the version it appends after (set by the version check)."""
    retries: int = 0
    submitted: float = field(default_factory=time.monotonic)
    """When the caller made the append: how long it may keep losing races (batch_writer)."""

    def succeed(self, recorded: list[list[RecordedEvent]]) -> None:
        if not self.future.done():
            self.future.set_result(recorded)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
