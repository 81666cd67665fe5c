"""The infrastructure factory: `PERSISTENCE_MODULE=esmongo.eventsourcing`.

Reads, through the library's Environment (so an application's prefix wins, as
`BANKACCOUNTS_MONGODB_DATABASE` for an application named BankAccounts):
- MONGODB_URI: a replica set (transactions, change streams); unset, the embedded server.
- MONGODB_DATABASE: default `eventsourcing`.
- CREATE_TABLE: create indexes and counters when a recorder is made (default yes).

Collections, as the library's PostgreSQL module names its tables: `<app>_events` (the
application's events; its counter document in `counters` has `_id` `<app>_events`),
`<app>_snapshots` and other aggregate recorders' `<app>_<purpose>`, `<app>_tracking`;
`<app>` is the application name in lower case (`stored`, or `notification` for tracking,
`dcb` for a DCB recorder, when it has none). The same factory serves the library's DCB
applications (`DCBApplication`): `dcb_recorder()` (esmongo.eventsourcing.dcb).
"""

from __future__ import annotations

import threading

from eventsourcing.dcb.persistence import DCBInfrastructureFactory
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from esmongo.eventsourcing.datastore import Datastore
from esmongo.eventsourcing.dcb import MongoDCBRecorder
from esmongo.eventsourcing.recorders import (
    MongoAggregateRecorder,
    MongoApplicationRecorder,
    MongoProcessRecorder,
    MongoTrackingRecorder,
)

DEFAULT_DATABASE = "eventsourcing"


class MongoFactory(
    InfrastructureFactory[MongoTrackingRecorder], DCBInfrastructureFactory[MongoTrackingRecorder]
):
    """One class for both kinds of application: the library finds a persistence module's
    factory as the one subclass of the kind it wants in the module."""

    MONGODB_URI = "MONGODB_URI"
    MONGODB_DATABASE = "MONGODB_DATABASE"
    CREATE_TABLE = "CREATE_TABLE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self._datastore: Datastore | None = None
        self._lock = threading.Lock()

    @property
    def datastore(self) -> Datastore:
        """Connected when the first recorder is made: the library also makes factories
        only for their mapper (a follower, for each application it follows) and never
        closes those, so a factory must cost nothing until it is used."""
        with self._lock:
            if self._datastore is None:
                self._datastore = Datastore(
                    self.env.get(self.MONGODB_URI) or None,
                    self.env.get(self.MONGODB_DATABASE) or DEFAULT_DATABASE,
                    name=self.env.name,
                )
            return self._datastore

    def env_create_table(self) -> bool:
        return strtobool(self.env.get(self.CREATE_TABLE) or "yes")

    def _prefix(self, default: str = "stored") -> str:
        return self.env.name.lower() or default

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        recorder = MongoAggregateRecorder(self.datastore, f"{self._prefix()}_{purpose}")
        if self.env_create_table():
            recorder.create_collection()
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls: type[MongoApplicationRecorder] = (
            resolve_topic(topic) if topic else MongoApplicationRecorder
        )
        recorder = cls(self.datastore, f"{self._prefix()}_events")
        if self.env_create_table():
            recorder.create_collection()
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[MongoTrackingRecorder] | None = None
    ) -> MongoTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else MongoTrackingRecorder
        assert tracking_recorder_class is not None
        if not issubclass(tracking_recorder_class, MongoTrackingRecorder):
            raise TypeError(
                f"{tracking_recorder_class.__name__} is not a MongoTrackingRecorder: this "
                "factory makes only those"
            )
        recorder = tracking_recorder_class(
            self.datastore, f"{self._prefix('notification')}_tracking"
        )
        if self.env_create_table():
            recorder.create_collection()
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls: type[MongoProcessRecorder] = resolve_topic(topic) if topic else MongoProcessRecorder
        recorder = cls(
            self.datastore,
            f"{self._prefix()}_events",
            f"{self._prefix('notification')}_tracking",
        )
        if self.env_create_table():
            recorder.create_collection()
        return recorder

    def dcb_recorder(self) -> MongoDCBRecorder:
        recorder = MongoDCBRecorder(self.datastore, f"{self._prefix('dcb')}_events")
        if self.env_create_table():
            recorder.create_collection()
        return recorder

    def close(self) -> None:
        with self._lock:
            datastore, self._datastore = self._datastore, None
        if datastore is not None:
            datastore.close()
        super().close()
