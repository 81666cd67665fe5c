"""The audit trail of administration: who rebuilt, replayed, retried, discarded, migrated,
archived, changed a key or erased a subject, when and why, as events of their own stream.

Events, not log lines: they are immutable, ordered with everything else, backed up and
restored with the log, and read with the same tools (`esmongo events list --stream
esmongo.admin/audit`). The stream takes appends from every process at once (expected
version ANY: the store retries a lost race).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from esmongo.events import ANY, NewEvent, RecordedEvent, StreamId
from esmongo.schema.registry import EventSchema
from esmongo.store import EventStore

AUDIT_STREAM = StreamId("esmongo.admin", "audit")
_STREAM = (AUDIT_STREAM.aggregate_type, AUDIT_STREAM.aggregate_id)

ACTIONS = frozenset(
    {
        "ProjectionRebuildStarted",
        "ProjectionReplayed",
        "DeadLetterRetried",
        "DeadLetterDiscarded",
        "MigrationRun",
        "MigrationSwitched",
        "MigrationRolledBack",
        "StreamArchived",
        "ApiKeyCreated",
        "ApiKeyRotated",
        "ApiKeyRevoked",
        "DataSubjectForgotten",
    }
)
"""The event types of the audit stream: one per kind of administrative action."""

_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
_ACTION_DATA = {
    "type": "object",
    "required": ["by", "details"],
    "additionalProperties": False,
    "properties": {
        "by": {
            "type": "object",
            "required": ["userId", "userName", "via"],
            "additionalProperties": False,
            "properties": {
                "userId": _TEXT,
                "userName": _TEXT,
                "via": {"enum": ["api", "console", "cli"]},
                "role": _TEXT,
                "keyPrefix": _TEXT,
            },
        },
        "reason": _TEXT,
        "details": {"type": "object"},
    },
}
AUDIT_SCHEMAS = [
    EventSchema(action, "1.0", _ACTION_DATA, "An administrative action: who, why, on what.")
    for action in sorted(ACTIONS)
]
"""Registered by every application (esmongo.application), strict or not."""


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key's user (with its role and key prefix) or a shell user."""

    user_id: str
    user_name: str
    via: str
    """"api", "console" or "cli"."""
    role: str | None = None
    key_prefix: str | None = None

    @classmethod
    def shell(cls) -> Actor:
        """The operating-system user running a CLI command, on this host."""
        user = getpass.getuser()
        return cls(f"{user}@{socket.gethostname()}", user, "cli")

    def to_document(self) -> dict[str, Any]:
        doc = {"userId": self.user_id, "userName": self.user_name, "via": self.via}
        if self.role is not None:
            doc["role"] = self.role
        if self.key_prefix is not None:
            doc["keyPrefix"] = self.key_prefix
        return doc


@dataclass(frozen=True)
class Action:
    """An audit event, flat, for a table (the console's overview)."""

    at: datetime
    action: str
    user_id: str
    role: str | None
    source: str
    target: str
    reason: str

    @classmethod
    def of(cls, event: RecordedEvent) -> Action:
        by = event.data.get("by", {})
        details = event.data.get("details", {})
        return cls(
            at=event.timestamp,
            action=event.event_type,
            user_id=str(by.get("userId", "")),
            role=by.get("role"),
            source=str(by.get("via", "")),
            target=", ".join(f"{key}={value}" for key, value in details.items()),
            reason=str(event.data.get("reason", "")),
        )


class AuditTrail:
    """Records administrative actions in the audit stream of a store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def record(
        self,
        action: str,
        actor: Actor,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> RecordedEvent:
        """Append one action. Unknown actions are refused: the trail is a closed vocabulary."""
        if action not in ACTIONS:
            raise ValueError(
                f"unknown audit action {action!r} (known: {', '.join(sorted(ACTIONS))})"
            )
        data: dict[str, Any] = {"by": actor.to_document(), "details": dict(details or {})}
        if reason:
            data["reason"] = reason
        metadata = {"userId": actor.user_id, "userName": actor.user_name}
        (recorded,) = await self.store.append(
            AUDIT_STREAM.aggregate_type,
            AUDIT_STREAM.aggregate_id,
            [NewEvent(action, data, metadata=metadata)],
            ANY,
        )
        return recorded

    async def recent(self, limit: int = 20) -> list[RecordedEvent]:
        """The last `limit` actions, newest first: one head read and one bounded range."""
        head = await self.store.stream_version(*_STREAM)
        first = max(1, head - limit + 1)
        found = [e async for e in self.read(first - 1)]
        return found[::-1]

    async def read(self, after_version: int = 0) -> AsyncIterator[RecordedEvent]:
        """The trail in the order it was recorded."""
        async for event in self.store.read_stream(
            AUDIT_STREAM.aggregate_type, AUDIT_STREAM.aggregate_id, after_version + 1
        ):
            yield event
