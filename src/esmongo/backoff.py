"""The one retry pause: exponential, capped, with full jitter.

Whoever retries after losing a race (a write conflict on the counter, a command whose
stream moved) waits a random time up to `base * 2**(attempt - 1)`, capped: the waiting
ones spread out instead of colliding again on the next round trip.
"""

from __future__ import annotations

import random


def jittered(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))
