"""The domain model over the store: aggregates, the repository, snapshots, time travel."""

from esmongo.model.aggregate import Aggregate, EventLike, applies
from esmongo.model.cache import AggregateCache
from esmongo.model.repository import Repository
from esmongo.model.snapshots import Snapshot, SnapshotStore
from esmongo.model.temporal import TemporalQueries

__all__ = [
    "Aggregate",
    "AggregateCache",
    "EventLike",
    "Repository",
    "Snapshot",
    "SnapshotStore",
    "TemporalQueries",
    "applies",
]
