"""A runner's Prometheus series and its recent throughput, kept apart from its loop."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from esmongo.events import RecordedEvent
from esmongo.metrics import (
    PROJECTION_BATCH_DURATION,
    PROJECTION_DEAD_LETTERS,
    PROJECTION_EVENT_LATENCY,
    PROJECTION_EVENTS,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
    PROJECTION_LEASE_HELD,
)


class RunnerMetrics:
    """What one projection's runner reports: per batch, lag, lease and dead letters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)

    def batch(
        self, events: Sequence[RecordedEvent], duration: float, *, live: bool, now: float
    ) -> None:
        self._rate.append((time.monotonic(), len(events)))
        PROJECTION_EVENTS.labels(self.name).inc(len(events))
        PROJECTION_BATCH_DURATION.labels(self.name).observe(duration)
        if live:  # append-to-read-model latency; meaningless while catching up
            latency = PROJECTION_EVENT_LATENCY.labels(self.name)
            for event in events:
                latency.observe(max(0.0, now - event.timestamp.timestamp()))

    def lag(self, events: int, seconds: float) -> None:
        PROJECTION_LAG_EVENTS.labels(self.name).set(events)
        PROJECTION_LAG_SECONDS.labels(self.name).set(seconds)

    def lease_held(self, held: bool) -> None:
        PROJECTION_LEASE_HELD.labels(self.name).set(1 if held else 0)

    def dead_letters(self, count: int) -> None:
        PROJECTION_DEAD_LETTERS.labels(self.name).set(count)

    @property
    def events_per_second(self) -> float:
        """Events applied per second over the last few seconds."""
        horizon = time.monotonic() - 10.0
        recent = [(t, n) for t, n in self._rate if t >= horizon]
        if len(recent) < 2:
            return 0.0
        span = recent[-1][0] - recent[0][0]
        return sum(n for _t, n in recent[1:]) / span if span > 0 else 0.0
