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
    versions: Sequence[int] | None = None
    """The events' stream versions as the caller numbers them (any ascending ints >= 0,
    gaps allowed), instead of head + 1, head + 2...: nothing is read before the transaction,
    and a version taken already is a ConcurrencyError raised by the unique index
    `aggregate_ordering` as the transaction inserts it. Only with expected_version ANY."""

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
    if request.versions is not None:
        _validate_versions(request)
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


def _validate_versions(request: AppendRequest) -> None:
    versions = request.versions
    assert versions is not None
    if request.expected_version is not ANY:
        raise ValueError(
            f"{request.stream}: versions as given go with expected_version ANY "
            f"(the unique index checks them), not {request.expected_version!r}"
        )
    if len(versions) != len(request.events):
        raise ValueError(
            f"{request.stream}: {len(versions)} versions given for {len(request.events)} events"
        )
    for index, version in enumerate(versions):
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(
                f"{request.stream}: version #{index} must be an int >= 0, not {version!r}"
            )
