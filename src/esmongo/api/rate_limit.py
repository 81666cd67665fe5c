"""A per-key request rate limit, per process: a token bucket for each key.

Per process, so N service processes behind a balancer let a key make up to N times its
rate (docs/security.md). A shared limit would cost a database write per request, which is
what the limit protects the database from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Up to `rate` requests per second per key, with bursts of `burst_seconds` worth."""

    def __init__(
        self, *, burst_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst_seconds = burst_seconds
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: float) -> float:
        """0 when the request may go ahead (and is counted), otherwise the seconds to wait."""
        capacity = max(1.0, rate * self.burst_seconds)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


def retry_after(seconds: float) -> str:
    """The Retry-After header's value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
