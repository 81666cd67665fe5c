"""A batch's events as they are recorded: each one's sequence number and stream version.

Pure: the batch writer takes a block of sequence numbers from the counter in its
transaction (esmongo.store.batch_writer) and hands over the first; the numbers follow the
batch's order, appends, then streams, then events, so that the block is filled without a gap.
"""

from __future__ import annotations

from datetime import datetime

from esmongo.events import NewEvent, RecordedEvent
from esmongo.store.pending import PendingAppend
from esmongo.store.requests import AppendRequest


def number_events(
    batch: list[PendingAppend], first: int, now: datetime
) -> list[list[list[RecordedEvent]]]:
    """The batch's events numbered from `first` + 1 on: by append, then stream, then event.

    A stream's versions follow its head as the version check found it, or are the ones
    its request gave (AppendRequest.versions, checked by the unique index alone).
    """
    sequence = first
    recorded: list[list[list[RecordedEvent]]] = []
    for append in batch:
        streams = []
        for request, head in zip(append.requests, append.heads, strict=True):
            events = []
            for offset, event in enumerate(request.events, start=1):
                sequence += 1
                version = (
                    head + offset if request.versions is None else request.versions[offset - 1]
                )
                events.append(_record(request, event, version, sequence, now))
            streams.append(events)
        recorded.append(streams)
    return recorded


def _record(
    request: AppendRequest, event: NewEvent, version: int, sequence: int, now: datetime
) -> RecordedEvent:
    timestamp = event.timestamp or now
    return RecordedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        event_version=event.event_version,
        aggregate_type=request.aggregate_type,
        aggregate_id=request.aggregate_id,
        aggregate_version=version,
        data=event.data,
        metadata={**event.metadata, "timestamp": timestamp},
        timestamp=timestamp,
        sequence=sequence,
    )
