"""MongoDB for the `eventsourcing` library: `PERSISTENCE_MODULE=esmongo.eventsourcing`.

Needs the extra `esmongo[eventsourcing]`; nothing else in esmongo imports this package.
docs/eventsourcing.md says how to switch an application, what is stored where, and the
figures; docs/adr/0011 why the synchronous recorders run on esmongo's async store.
"""

from esmongo.eventsourcing.factory import MongoFactory
from esmongo.eventsourcing.recorders import (
    MongoAggregateRecorder,
    MongoApplicationRecorder,
    MongoProcessRecorder,
    MongoTrackingRecorder,
)
from esmongo.eventsourcing.subscription import MongoSubscription

Factory = MongoFactory

__all__ = [
    "Factory",
    "MongoAggregateRecorder",
    "MongoApplicationRecorder",
    "MongoFactory",
    "MongoProcessRecorder",
    "MongoSubscription",
    "MongoTrackingRecorder",
]
