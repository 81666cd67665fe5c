"""esmongo: event sourcing on MongoDB.

"The seed", in docstrings and docs, is the specification this project implements: the
French document "Event Sourcing avec MongoDB" (its collections, event shape, bank accounts
and metrics table); docs/layers.md says where each of its parts lives.

The everyday names: the event store and its events, aggregates and their repository,
projections, the schema registry, the connection and the errors a caller handles. The rest
is imported from its layer's package (`esmongo.store`, `esmongo.model`, `esmongo.schema`,
`esmongo.projections`, `esmongo.ops...`, `esmongo.connect`); README.md lists where.
"""

from esmongo.connect import Connection
from esmongo.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
    DomainError,
    EsmongoError,
    EventValidationError,
)
from esmongo.events import ANY, NO_STREAM, STREAM_EXISTS, NewEvent, RecordedEvent
from esmongo.model import Aggregate, AggregateCache, Repository, SnapshotStore, applies
from esmongo.projections import Projection, ProjectionDaemon
from esmongo.schema import SchemaRegistry, Upcasters
from esmongo.store import AppendRequest, EventStore

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateCache",
    "AggregateNotFoundError",
    "AppendRequest",
    "ConcurrencyError",
    "Connection",
    "DomainError",
    "EsmongoError",
    "EventStore",
    "EventValidationError",
    "NewEvent",
    "Projection",
    "ProjectionDaemon",
    "RecordedEvent",
    "Repository",
    "SchemaRegistry",
    "SnapshotStore",
    "Upcasters",
    "applies",
]
