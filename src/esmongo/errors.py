"""Every error esmongo raises, so callers can catch one family and tell cases apart."""

from __future__ import annotations

from dataclasses import dataclass

from esmongo.events import StreamId


class EsmongoError(Exception):
    """Base of all esmongo errors. `code` is stable, for programs and HTTP bodies."""

    code: str = "esmongo_error"


class ConfigurationError(EsmongoError):
    """The database or the environment cannot be used as configured."""

    code = "configuration_error"


class EmbeddedServerError(ConfigurationError):
    """The embedded server could not be started, found or reused."""

    code = "embedded_server_error"


class ConcurrencyError(EsmongoError):
    """The stream was not at the version the caller expected: nothing was written."""

    code = "concurrency_conflict"

    def __init__(self, stream: StreamId, expected: object, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"concurrency conflict on {stream}: expected version {expected}, "
            f"but the stream is at version {actual}"
        )


class AppendConditionFailed(EsmongoError):
    """An event recorded since the position the caller read up to matches the append's
    condition (esmongo.store.conditions): nothing was written."""

    code = "append_condition_failed"

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        super().__init__(f"the append's condition failed: event {sequence} matches it")


class StreamArchived(EsmongoError):
    """The stream was archived (moved whole to `events_archive`): it takes no more events.

    Its events are still read (streams, global order, time travel), never written to.
    """

    code = "stream_archived"

    def __init__(self, stream: StreamId) -> None:
        self.stream = stream
        super().__init__(f"{stream} is archived: it takes no more events")


class DuplicateEventError(EsmongoError):
    """Some of the event ids were recorded before, but not as this same append."""

    code = "duplicate_event"


@dataclass(frozen=True)
class SchemaViolation:
    """One broken rule of an event's JSON Schema."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (rule '{self.rule}')"


class EventValidationError(EsmongoError):
    """An event's data does not match its registered schema: nothing was written."""

    code = "invalid_event"

    def __init__(
        self,
        event_type: str,
        event_version: str,
        violations: list[SchemaViolation],
        *,
        index: int | None = None,
        stream: StreamId | None = None,
    ) -> None:
        self.event_type = event_type
        self.event_version = event_version
        self.violations = violations
        self.index = index
        self.stream = stream
        where = f" #{index}" if index is not None else ""
        on = f" on {stream}" if stream is not None else ""
        details = "; ".join(str(v) for v in violations)
        super().__init__(f"event{where} {event_type} v{event_version}{on} is invalid: {details}")


class UnknownEventTypeError(EsmongoError):
    """Strict mode met an event type (or version) with no registered schema or handler."""

    code = "unknown_event_type"


class SchemaError(EsmongoError):
    """A schema or upcaster registration is itself wrong."""

    code = "schema_error"


class AggregateNotFoundError(EsmongoError):
    """No event was ever recorded for this aggregate."""

    code = "aggregate_not_found"

    def __init__(self, stream: StreamId) -> None:
        self.stream = stream
        super().__init__(f"{stream} not found: no event was ever recorded for it")


class DomainError(EsmongoError):
    """A business rule refused a command."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message)


class EventsCollectionSealed(EsmongoError):
    """The events collection was switched away from by a migration and refuses writes."""

    code = "events_collection_sealed"


class MasterKeyError(ConfigurationError):
    """Personal data cannot be encrypted or decrypted with the configured master key
    (missing, malformed, or not the one that wrapped a data key)."""

    code = "master_key_error"


class UnknownSubjectError(EsmongoError):
    """A data subject to forget has no data key and was never forgotten."""

    code = "unknown_subject"

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"no data key for subject {subject!r} and no erasure of it: nothing was ever "
            "encrypted for it (subjects look like 'user:<userId>' or '<aggregateType>/<id>')"
        )
