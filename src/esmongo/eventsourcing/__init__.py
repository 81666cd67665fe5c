"""MongoDB for the `eventsourcing` library: `PERSISTENCE_MODULE=esmongo.eventsourcing`.

Needs the extra `esmongo[eventsourcing]`; nothing else in esmongo imports this package.
docs/eventsourcing.md says how to switch an application, what is stored where, and the
figures; docs/adr/0011 why the synchronous recorders run on esmongo's async store.
"""

try:
    import eventsourcing  # noqa: F401
except ModuleNotFoundError as missing:  # pragma: no cover (the lean install test runs it)
    raise ModuleNotFoundError(
        "esmongo.eventsourcing needs the eventsourcing library: pip install "
        "'esmongo[eventsourcing]'",
        name=missing.name,
    ) from missing

from esmongo.eventsourcing.dcb import MongoDCBRecorder, MongoDCBSubscription
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
    "MongoDCBRecorder",
    "MongoDCBSubscription",
    "MongoFactory",
    "MongoProcessRecorder",
    "MongoSubscription",
    "MongoTrackingRecorder",
]
