"""How a projection runner runs: one options object for a runner and for a daemon of them.

`ProjectionRunner(store, projection, RunnerOptions(batch_size=100))` and
`ProjectionDaemon(store, projections, RunnerOptions(lease_ttl_s=3))` take the same object;
a daemon gives its runners one owner, so they read as one process in the lease documents.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from esmongo.events import RecordedEvent

CATCH_UP_EVENTS = 20_000
"""Default events per catch-up batch (RunnerOptions.catch_up_batch_size)."""
CATCH_UP_BYTES = 16 * 1024 * 1024
"""Default bytes of events per catch-up batch (RunnerOptions.catch_up_max_bytes)."""

StepHook = Callable[[str], None]
"""Called with the name of each point of a batch ("read", "checkpoint", "writes",
"before_commit", "committed"), so a test or a chaos worker can stop a runner there."""


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did (for hooks and benchmarks)."""

    projection: str
    events: Sequence[RecordedEvent]
    position: int
    head: int
    duration_s: float
    committed_at: float
    """time.time() right after the commit."""
    operations: int
    dead_letters: int


def default_owner() -> str:
    """host:pid:random: unique among live processes, readable in the lease document."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RunnerOptions:
    """Batch sizes, lease timing and hooks of projection runners."""

    owner: str | None = None
    """Who holds the leases (default: default_owner(), one per runner or daemon)."""
    batch_size: int = 500
    """Events per batch while live: one transaction each."""
    catch_up_batch_size: int | None = None
    """Events per batch while more than a live batch behind (default CATCH_UP_EVENTS): a
    batch reads the whole backlog up to this many events, so each read-model document is
    written once per batch, not once per live batch (docs/projections.md, "Catch-up
    batches")."""
    catch_up_max_bytes: int = CATCH_UP_BYTES
    """Bytes of stored events per catch-up batch, estimated as they are read: bounds the
    batch's memory and its transaction's size, whatever the events weigh. A batch whose
    transaction the server refuses as too large or too long halves the catch-up size."""
    lease_ttl_s: float = 10.0
    idle_poll_s: float = 1.0
    """How long a live runner waits for a change-stream wake-up before it looks anyway."""
    standby_poll_s: float | None = None
    """How often a runner without the lease tries to take it (default lease_ttl_s / 4)."""
    on_batch: Callable[[BatchReport], None] | None = None
    step_hook: StepHook | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.catch_up_batch_size is not None and self.catch_up_batch_size < 1:
            raise ValueError("catch_up_batch_size must be >= 1")
        if self.catch_up_max_bytes < 1:
            raise ValueError("catch_up_max_bytes must be >= 1")

    @property
    def catch_up_size(self) -> int:
        return max(self.batch_size, self.catch_up_batch_size or CATCH_UP_EVENTS)

    @property
    def standby_poll(self) -> float:
        return self.standby_poll_s if self.standby_poll_s is not None else self.lease_ttl_s / 4
