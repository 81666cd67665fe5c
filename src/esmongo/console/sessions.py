"""Console sessions: a random id in a cookie, the key and CSRF token in this process.

The API key is kept in memory only, so each request checks it again (a revoked key ends
its sessions within the key cache's seconds); it never goes into a URL, cookie or log.
Sessions live in the process: a restart or another `esmongo serve` means logging in again.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

COOKIE = "esmongo_session"
IDLE_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    key: str
    csrf: str
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._by_id: dict[str, Session] = {}

    def open(self, key: str) -> Session:
        self._expire()
        if len(self._by_id) >= MAX_SESSIONS:  # bounded memory: the oldest goes first
            oldest = min(self._by_id.values(), key=lambda s: s.last_seen)
            del self._by_id[oldest.id]
        session = Session(secrets.token_urlsafe(32), key, secrets.token_urlsafe(32))
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        now = time.monotonic()
        if session is None or now - session.last_seen > self.idle_seconds:
            self._by_id.pop(session_id, None)
            return None
        session.last_seen = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for stale in [s.id for s in self._by_id.values() if now - s.last_seen > self.idle_seconds]:
            del self._by_id[stale]
