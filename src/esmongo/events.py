"""Events as the application raises them and as the store records them. Pure: no I/O."""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DEFAULT_EVENT_VERSION = "1.0"


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond that BSON dates keep."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc_millis(value: datetime) -> datetime:
    """The same instant in UTC, truncated to the millisecond BSON keeps. Naive is refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware (UTC), not naive: {value!r}")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def new_event_id() -> str:
    """A unique id that sorts by creation time (good locality in the unique index)."""
    return f"evt_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def stable_event_id(*parts: str) -> str:
    """An id derived from what makes an event unique in the business (e.g. account and
    transaction id): appending it twice hits the unique index, so it is recorded once."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt_{digest[:32]}"


@dataclass(frozen=True)
class StreamId:
    """One aggregate's stream: its type and id."""

    aggregate_type: str
    aggregate_id: str

    def __str__(self) -> str:
        return f"{self.aggregate_type}/{self.aggregate_id}"


class ExpectedVersion(enum.Enum):
    """What an append expects of its stream, besides an exact version number."""

    ANY = "any"
    """No check: append after whatever is there."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as expecting version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __str__(self) -> str:
        return self.value


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected = int | ExpectedVersion


@dataclass(frozen=True)
class NewEvent:
    """An event to append. The store assigns sequence and stream version.

    `event_id` makes a retried append idempotent: give the same id again and the store
    returns what it recorded the first time. `timestamp` defaults to the append time;
    aggregates pass the time they applied the event so replay sees the same value.
    """

    event_type: str
    data: Mapping[str, Any]
    event_version: str = DEFAULT_EVENT_VERSION
    metadata: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        # Recorded as BSON stores it, so what append returns equals what a read returns.
        if self.timestamp is not None:
            object.__setattr__(self, "timestamp", as_utc_millis(self.timestamp))


@dataclass(frozen=True)
class RecordedEvent:
    """An event as it is in the store: immutable, with its place in both orders."""

    event_id: str
    event_type: str
    event_version: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    timestamp: datetime
    sequence: int
    upcast_from: str | None = None
    """The stored version when an upcaster changed this event on read."""
    replayed: bool = field(default=False, compare=False)
    """Set on what `append` returns when it wrote nothing because an earlier append had
    recorded these event ids: the caller's retry was a no-op. Never stored."""

    def to_document(self) -> dict[str, Any]:
        """The seed's document shape. `_id` is the sequence: unique, ordered, one index less."""
        return {
            "_id": self.sequence,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "eventVersion": self.event_version,
            "aggregateType": self.aggregate_type,
            "aggregateId": self.aggregate_id,
            "aggregateVersion": self.aggregate_version,
            "data": dict(self.data),
            "metadata": dict(self.metadata),
            "timestamp": self.timestamp,
            "sequence": self.sequence,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RecordedEvent:
        return cls(
            event_id=doc["eventId"],
            event_type=doc["eventType"],
            event_version=doc["eventVersion"],
            aggregate_type=doc["aggregateType"],
            aggregate_id=doc["aggregateId"],
            aggregate_version=doc["aggregateVersion"],
            data=doc["data"],
            metadata=doc.get("metadata") or {},
            timestamp=doc["timestamp"],
            sequence=doc["sequence"],
        )
