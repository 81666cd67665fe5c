"""The domain model over the store: aggregates, the repository, snapshots, time travel."""

from esmongo.model.aggregate import Aggregate, applies
from esmongo.model.repository import Repository
from esmongo.model.snapshots import SnapshotStore
from esmongo.model.temporal import TemporalQueries

__all__ = ["Aggregate", "Repository", "SnapshotStore", "TemporalQueries", "applies"]
