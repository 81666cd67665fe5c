"""What an append asks for, and what can be checked of it before touching the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from esmongo.errors import EventValidationError
from esmongo.events import ANY, Expected, ExpectedVersion, NewEvent, StreamId
from esmongo.schema.registry import SchemaRegistry


@dataclass(frozen=True)
class AppendRequest:
    """Events for one stream, with what the caller expects of that stream."""

    aggregate_type: str
    aggregate_id: str
    events: Sequence[NewEvent]
    expected_version: Expected = ANY

    @property
    def stream(self) -> StreamId:
        return StreamId(self.aggregate_type, self.aggregate_id)


def validate_request(request: AppendRequest, registry: SchemaRegistry) -> None:
    """Everything about a request that can be checked before touching the database."""
    if not request.aggregate_type or not request.aggregate_id:
        raise ValueError("aggregate_type and aggregate_id must be non-empty strings")
    expected = request.expected_version
    if not isinstance(expected, ExpectedVersion) and (
        not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
    ):
        raise ValueError(
            f"expected_version must be an int >= 0 or ANY/NO_STREAM/STREAM_EXISTS, not {expected!r}"
        )
    for index, event in enumerate(request.events):
        if not event.event_type:
            raise ValueError(f"event #{index} on {request.stream} has no event_type")
        if not isinstance(event.data, Mapping):
            raise TypeError(f"event #{index} on {request.stream}: data must be a mapping")
        violations = registry.violations(event.event_type, event.event_version, event.data)
        if violations:
            raise EventValidationError(
                event.event_type,
                event.event_version,
                violations,
                index=index,
                stream=request.stream,
            )
