"""esmongo: event sourcing on MongoDB.

The public API: the event store, events, aggregates, repository, snapshots and the
schema registry. See README.md and docs/.
"""

from esmongo.aggregate import Aggregate, EventLike, applies
from esmongo.catalog import SchemaCatalog
from esmongo.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    DuplicateEventError,
    EmbeddedServerError,
    EsmongoError,
    EventValidationError,
    SchemaError,
    SchemaViolation,
    StreamId,
    UnknownEventTypeError,
)
from esmongo.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    new_event_id,
    stable_event_id,
    utc_now,
)
from esmongo.mongo import CODEC_OPTIONS, Connection, Settings
from esmongo.repository import Repository
from esmongo.schema import EventSchema, SchemaRegistry, Upcasters
from esmongo.snapshots import Snapshot, SnapshotStore
from esmongo.store import AppendRequest, EventStore

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "CODEC_OPTIONS",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateNotFoundError",
    "AppendRequest",
    "ConcurrencyError",
    "ConfigurationError",
    "Connection",
    "DomainError",
    "DuplicateEventError",
    "EmbeddedServerError",
    "EsmongoError",
    "EventLike",
    "EventSchema",
    "EventStore",
    "EventValidationError",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Repository",
    "SchemaCatalog",
    "SchemaError",
    "SchemaRegistry",
    "SchemaViolation",
    "Settings",
    "Snapshot",
    "SnapshotStore",
    "StreamId",
    "UnknownEventTypeError",
    "Upcasters",
    "applies",
    "new_event_id",
    "stable_event_id",
    "utc_now",
]
