"""The `eventsourcing` library's application and projection test cases on
esmongo.eventsourcing, and a System whose follower is killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.system import SingleThreadedRunner
from eventsourcing.tests.application import ExampleApplicationTestCase
from eventsourcing.tests.projection import (
    AggregateEventCountersProjectionTestCase,
    EventCountersView,
    EventCountersViewTestCase,
    EventSourcedProjectionTestCase,
)
from eventsourcing.utils import Environment
from pymongo import UpdateOne

from es_apps import PAUSE_AT, Fulfilment, Orders, system
from esmongo.eventsourcing import MongoFactory, MongoTrackingRecorder
from esmongo.store import DocumentWrite
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)

TESTS = Path(__file__).parent


class TestExampleApplication(ExampleApplicationTestCase):
    expected_factory_topic = "esmongo.eventsourcing.factory:MongoFactory"


class MongoEventCounters(MongoTrackingRecorder, EventCountersView):
    """A materialised view: counters and the tracking record, written in one transaction."""

    COUNTED = "created", "subsequent"

    @property
    def _counters(self) -> str:
        return f"{self.trackings.name}_counters"

    def _increment(self, name: str, tracking: Tracking) -> None:
        write = UpdateOne({"_id": name}, {"$inc": {"count": 1}}, upsert=True)
        self.insert_tracking_with(tracking, [DocumentWrite(self._counters, write)])

    def _count(self, name: str) -> int:
        found = self.datastore.run(self.datastore.db[self._counters].find_one({"_id": name}))
        return 0 if found is None else int(found["count"])

    def get_created_event_counter(self) -> int:
        return self._count("created")

    def get_subsequent_event_counter(self) -> int:
        return self._count("subsequent")

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self._increment("created", tracking)

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self._increment("subsequent", tracking)


class TestEventCountersView(EventCountersViewTestCase):
    def setUp(self) -> None:
        self.factory = MongoFactory(Environment("", dict(os.environ)))

    def tearDown(self) -> None:
        self.factory.close()

    def construct_event_counters_view(self) -> MongoEventCounters:
        view = self.factory.tracking_recorder(MongoEventCounters)
        assert isinstance(view, MongoEventCounters)
        return view


class TestAggregateEventCountersProjection(AggregateEventCountersProjectionTestCase):
    view_class = MongoEventCounters


class TestEventSourcedProjection(EventSourcedProjectionTestCase):
    env: ClassVar[dict[str, str]] = {}


del ExampleApplicationTestCase, AggregateEventCountersProjectionTestCase
del EventCountersViewTestCase, EventSourcedProjectionTestCase


@pytest.fixture
def runner() -> Iterator[SingleThreadedRunner[Any]]:
    started: list[SingleThreadedRunner[Any]] = []

    def start() -> SingleThreadedRunner[Any]:
        made: SingleThreadedRunner[Any] = SingleThreadedRunner(system())
        made.start()
        started.append(made)
        return made

    yield start  # type: ignore[misc]
    for made in started:
        made.stop()


def _run_follower_until_paused(at: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    marker = tmp_path / "paused"
    env = {**os.environ, PAUSE_AT: f"{at}:{marker}", "PYTHONPATH": str(TESTS)}
    follower = subprocess.Popen([sys.executable, str(TESTS / "es_follower.py")], env=env)
    deadline = time.monotonic() + 60
    while not marker.exists():  # the follower's own signal: it is inside its policy
        if follower.poll() is not None:
            raise AssertionError(f"the follower ended before pausing: {follower.returncode}")
        if time.monotonic() > deadline:
            follower.kill()
            raise AssertionError("the follower never reached its pause")
        time.sleep(0.05)
    return follower


def test_a_follower_killed_mid_stream_processes_every_event_once(
    runner: Any, tmp_path: Path
) -> None:
    orders = Orders()  # alone: nothing follows it yet
    placed = [orders.place(f"item {n}") for n in range(30)]
    orders.close()

    # Another process follows, and is killed as it processes the 12th order.
    follower = _run_follower_until_paused(12, tmp_path)
    follower.send_signal(signal.SIGKILL)
    follower.wait()

    again = runner()
    fulfilment = again.get(Fulfilment)
    done = fulfilment.recorder.max_tracking_id(Orders.name)
    assert done == 11, f"the killed follower committed up to {done}, not the 11 before its pause"
    fulfilment.pull_and_process(Orders.name)  # catches up from its tracking record
    placed += [again.get(Orders).place(f"late {n}") for n in range(10)]  # processed live

    shipments = fulfilment.shipments()
    shipped = [n.originator_id for n in shipments]
    assert len(shipped) == len(set(shipped)) == len(placed) == 40
    assert set(shipped) == {fulfilment.repository.get(s).id for s in shipped}
    assert {fulfilment.repository.get(s).order_id for s in shipped} == set(placed)
    leader_head = again.get(Orders).recorder.max_notification_id()
    assert fulfilment.recorder.max_tracking_id(Orders.name) == leader_head
    ids = [n.id for n in shipments]
    assert ids == list(range(1, 41)), "the follower's own notification ids have a gap"


def test_a_tracking_record_repeated_with_new_events_is_refused_whole(runner: Any) -> None:
    made = runner()
    fulfilment = made.get(Fulfilment)
    recorder = fulfilment.recorder

    recorder.insert_events([StoredEvent(uuid4(), 1, "t", b"x")], tracking=Tracking("Orders", 5))
    head = recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(uuid4(), 1, "t", b"y")], tracking=Tracking("Orders", 5))
    assert recorder.max_notification_id() == head, "events of the refused insert were written"
