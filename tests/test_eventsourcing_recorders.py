"""The `eventsourcing` library's own recorder test suites, on esmongo.eventsourcing."""

from __future__ import annotations

import os
import threading

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

from esmongo.eventsourcing import (
    MongoAggregateRecorder,
    MongoApplicationRecorder,
    MongoFactory,
    MongoProcessRecorder,
    MongoTrackingRecorder,
)
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)

KEYS = ("PERSISTENCE_MODULE", "MONGODB_URI", "MONGODB_DATABASE")


class FactoryPerTest:
    """Makes recorders from one factory per test, closed (loop thread included) after."""

    factory: MongoFactory | None = None

    def new_factory(self, name: str = "") -> MongoFactory:
        env = Environment(name, {k: os.environ[k] for k in KEYS})
        factory = InfrastructureFactory.construct(env)
        assert isinstance(factory, MongoFactory)
        self.factories.append(factory)
        return factory

    def setUp(self) -> None:
        self.factories: list[MongoFactory] = []
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        for factory in self.factories:
            factory.close()
        super().tearDown()  # type: ignore[misc]


class TestAggregateRecorder(FactoryPerTest, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.new_factory().aggregate_recorder()


class TestApplicationRecorder(FactoryPerTest, ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(FactoryPerTest, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.new_factory().tracking_recorder()


class TestProcessRecorder(FactoryPerTest, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.new_factory().process_recorder()


class TestNonInterleavingNotificationIDs(FactoryPerTest, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().application_recorder()


class MongoTrackingRecorderSubclass(MongoTrackingRecorder):
    pass


class TestInfrastructureFactory(InfrastructureFactoryTestCase[MongoFactory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase", {k: os.environ[k] for k in KEYS})
        super().setUp()

    def expected_factory_class(self) -> type[MongoFactory]:
        return MongoFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return MongoAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return MongoApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return MongoTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return MongoTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return MongoProcessRecorder

    def test_a_factory_made_for_its_mapper_alone_starts_nothing(self) -> None:
        # A follower makes one per application it follows, and never closes it.
        before = {t for t in threading.enumerate() if t.name.startswith("esmongo-eventsourcing")}
        factory = InfrastructureFactory.construct(self.env)
        factory.mapper()
        after = {t for t in threading.enumerate() if t.name.startswith("esmongo-eventsourcing")}
        assert after == before, f"threads started: {after - before}"
        factory.close()

    def test_close_stops_the_loop_thread(self) -> None:
        before = {t for t in threading.enumerate() if t.name.startswith("esmongo-eventsourcing")}
        factory = InfrastructureFactory.construct(self.env)
        factory.application_recorder()
        factory.close()
        after = {t for t in threading.enumerate() if t.name.startswith("esmongo-eventsourcing")}
        assert after <= before, f"threads left running: {after - before}"


del AggregateRecorderTestCase, ApplicationRecorderTestCase, TrackingRecorderTestCase
del ProcessRecorderTestCase, NonInterleavingNotificationIDsBaseCase, InfrastructureFactoryTestCase
