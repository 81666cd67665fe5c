"""The `eventsourcing` library's stored events as esmongo event documents, and back.

One shape for both (esmongo.events.RecordedEvent.to_document), so that esmongo's CLI,
`check`, projections and backup read an `eventsourcing` application's events:
`_id` = `sequence` = the notification id; `aggregateType` = AGGREGATE_TYPE;
`aggregateId` = str(originator_id); `aggregateVersion` = originator_version, as given
(from 0 or 1, with gaps for snapshots); `eventType` = the topic; `data.state` = the
state, opaque bytes (BSON binary).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from eventsourcing.persistence import Notification, StoredEvent

from esmongo.events import NewEvent

AGGREGATE_TYPE = "eventsourcing"
"""`aggregateType` of every event written through this module."""
STATE = "state"
"""The field of `data` that holds the library's bytes."""
EVENT_VERSION = "1"
"""`eventVersion`: the library versions its events inside `state` (upcasting in its mapper)."""

EVENT_FIELDS = {"aggregateId": 1, "aggregateVersion": 1, "eventType": 1, "data": 1}
"""What a read of events needs of each document."""


def new_event(stored: StoredEvent) -> NewEvent:
    if not isinstance(stored.state, bytes):
        raise TypeError(
            f"the state of {stored.topic} v{stored.originator_version} of {stored.originator_id}"
            f" is a {type(stored.state).__name__}, not bytes"
        )
    return NewEvent(stored.topic, {STATE: stored.state}, EVENT_VERSION)


def originator(aggregate_id: str) -> uuid.UUID | str:
    """A UUID when the id is one's canonical text (what str(UUID) gives), else the text."""
    if len(aggregate_id) == 36:
        try:
            parsed = uuid.UUID(aggregate_id)
        except ValueError:
            return aggregate_id
        if str(parsed) == aggregate_id:
            return parsed
    return aggregate_id


def stored_event(doc: Mapping[str, Any]) -> StoredEvent:
    return StoredEvent(
        originator_id=originator(doc["aggregateId"]),
        originator_version=doc["aggregateVersion"],
        topic=doc["eventType"],
        state=bytes(doc["data"][STATE]),
    )


def notification(doc: Mapping[str, Any]) -> Notification:
    return Notification(
        id=doc["_id"],
        originator_id=originator(doc["aggregateId"]),
        originator_version=doc["aggregateVersion"],
        topic=doc["eventType"],
        state=bytes(doc["data"][STATE]),
    )
