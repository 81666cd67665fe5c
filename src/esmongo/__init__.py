"""esmongo: event sourcing on MongoDB.

"The seed", in docstrings and docs, is the specification this project implements: the
French document "Event Sourcing avec MongoDB" (its collections, event shape, bank accounts
and metrics table); docs/layers.md says where each of its parts lives.

The public API: the event store, events, aggregates, repository, snapshots and the
schema registry. See README.md and docs/.
"""

from esmongo.codec import CODEC_OPTIONS
from esmongo.connect.connection import Connection, Settings
from esmongo.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    DuplicateEventError,
    EmbeddedServerError,
    EsmongoError,
    EventsCollectionSealed,
    EventValidationError,
    SchemaError,
    SchemaViolation,
    StreamArchived,
    UnknownEventTypeError,
)
from esmongo.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamId,
    new_event_id,
    stable_event_id,
    utc_now,
)
from esmongo.model.aggregate import Aggregate, EventLike, applies, command_event_id
from esmongo.model.repository import Repository
from esmongo.model.snapshots import Snapshot, SnapshotStore
from esmongo.model.temporal import TemporalQueries, require_aware
from esmongo.ops.migration import Migration, Migrator
from esmongo.ops.schema_check import SyncReport, UnreachableVersion, unreachable_versions
from esmongo.ops.switchover import MigrationError, active_events_collection, rollback_switch
from esmongo.projections import (
    DeadLetter,
    DeadLetters,
    Delete,
    FailurePolicy,
    Insert,
    Projection,
    ProjectionDaemon,
    ProjectionRunner,
    ProjectionStatus,
    Update,
    handles,
    projection_status,
    rebuild,
    replay,
    reset,
    run_projections,
)
from esmongo.schema.catalog import SchemaCatalog
from esmongo.schema.registry import EventSchema, SchemaRegistry, Upcasters
from esmongo.store import AppendRequest, EventStore
from esmongo.store.archive import ArchiveReport

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "CODEC_OPTIONS",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateNotFoundError",
    "AppendRequest",
    "ArchiveReport",
    "ConcurrencyError",
    "ConfigurationError",
    "Connection",
    "DeadLetter",
    "DeadLetters",
    "Delete",
    "DomainError",
    "DuplicateEventError",
    "EmbeddedServerError",
    "EsmongoError",
    "EventLike",
    "EventSchema",
    "EventStore",
    "EventValidationError",
    "EventsCollectionSealed",
    "ExpectedVersion",
    "FailurePolicy",
    "Insert",
    "Migration",
    "MigrationError",
    "Migrator",
    "NewEvent",
    "Projection",
    "ProjectionDaemon",
    "ProjectionRunner",
    "ProjectionStatus",
    "RecordedEvent",
    "Repository",
    "SchemaCatalog",
    "SchemaError",
    "SchemaRegistry",
    "SchemaViolation",
    "Settings",
    "Snapshot",
    "SnapshotStore",
    "StreamArchived",
    "StreamId",
    "SyncReport",
    "TemporalQueries",
    "UnknownEventTypeError",
    "UnreachableVersion",
    "Upcasters",
    "Update",
    "active_events_collection",
    "applies",
    "command_event_id",
    "handles",
    "new_event_id",
    "projection_status",
    "rebuild",
    "replay",
    "require_aware",
    "reset",
    "rollback_switch",
    "run_projections",
    "stable_event_id",
    "unreachable_versions",
    "utc_now",
]
