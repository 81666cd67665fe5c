"""The DCB recorder (esmongo.eventsourcing.dcb): the library's own DCB recorder and tagged
projection test cases, the atomicity of a condition with its insert under a race made
deterministic by a pause point, appends that share a transaction, and the query plans."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.msgpack import MessagePackMapper
from eventsourcing.dcb.tests import DCBRecorderTestCase
from eventsourcing.persistence import IntegrityError, ProgrammingError
from eventsourcing.tests.projection import TaggedDecisionCountersProjectionTestCase
from eventsourcing.utils import Environment, get_topic
from pymongo import MongoClient

from esmongo.codec import Document
from esmongo.eventsourcing import MongoDCBRecorder, MongoFactory
from esmongo.eventsourcing.dcb_queries import scans
from esmongo.store import batch_writer
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)
from test_eventsourcing_queries import stages
from test_eventsourcing_system import MongoEventCounters


def _factory(name: str = "Ledger") -> MongoFactory:
    return MongoFactory(Environment(name, dict(os.environ)))


class TestMongoDCBRecorder(DCBRecorderTestCase):
    def setUp(self) -> None:
        self.factory = _factory()

    def tearDown(self) -> None:
        self.factory.close()

    def test_append_read(self) -> None:
        self._test_append_read(self.factory.dcb_recorder())

    def test_append_subscribe(self) -> None:
        self._test_append_subscribe(self.factory.dcb_recorder())


class TestTaggedDecisionCountersProjection(TaggedDecisionCountersProjectionTestCase):
    view_class = MongoEventCounters
    env = {"MAPPER_TOPIC": get_topic(MessagePackMapper)}


# The library's base cases, collected only through the subclasses above.
del DCBRecorderTestCase, TaggedDecisionCountersProjectionTestCase


@pytest.fixture
def recorder() -> Iterator[MongoDCBRecorder]:
    factory = _factory()
    yield factory.dcb_recorder()
    factory.close()


def event(*tags: str, type_: str = "Joined") -> DCBEvent:
    return DCBEvent(type=type_, data=b"{}", tags=list(tags))


def boundary(*tags: str, after: int | None) -> DCBAppendCondition:
    return DCBAppendCondition(DCBQuery([DCBQueryItem(tags=list(tags))]), after=after)


def test_the_factory_is_the_modules_one_for_both_kinds_of_application() -> None:
    from eventsourcing.dcb.application import DCBApplication

    app = DCBApplication()
    try:
        assert isinstance(app.factory, MongoFactory)
        assert isinstance(app.recorder, MongoDCBRecorder)
        assert app.recorder.events_collection == "dcbapplication_events"
    finally:
        app.close()


def test_bad_input_is_refused_with_what_and_where(recorder: MongoDCBRecorder) -> None:
    with pytest.raises(ProgrammingError):
        recorder.append([])
    with pytest.raises(TypeError, match=r"#1 \(Joined\): data is a str"):
        recorder.append([event("a"), DCBEvent("Joined", "text", ["a"])])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"#0 \(Joined\): tags must be a list of str"):
        recorder.append([DCBEvent("Joined", b"", [1])])  # type: ignore[list-item]
    assert list(recorder.read()) == []  # nothing half-written


def _pause_first(step: str) -> tuple[threading.Event, threading.Event]:
    """Pause the first transaction that reaches `step` (of any store of this process)
    until `release` is set; `paused` is set when it gets there."""
    paused, release = threading.Event(), threading.Event()

    async def hook() -> None:
        if not paused.is_set():
            paused.set()
            await asyncio.to_thread(release.wait)

    batch_writer.PAUSE_POINTS[step] = hook
    return paused, release


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_for(predicate: Callable[[], bool]) -> None:
    """Wait (up to 30 s) for something another thread does; never a timed race."""
    done = threading.Event()
    for _ in range(3000):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_a_condition_and_its_insert_are_atomic_against_another_process() -> None:
    """A's condition holds and A pauses in its transaction before committing; B, from
    another factory (its own store and transactions), appends to the same boundary with
    the same `after` meanwhile. B must not commit: it meets A's counter write, waits, and
    is then refused by A's event. A check outside the transaction would let both in."""
    first, second = _factory(), _factory()
    try:
        a, b = first.dcb_recorder(), second.dcb_recorder()
        head = a.append([event("course-1", type_="Registered")])
        paused, release = _pause_first("conditioned")
        try:
            thread_a, outcome_a = _in_thread(
                lambda: a.append([event("course-1")], boundary("course-1", after=head))
            )
            assert paused.wait(30)
            thread_b, outcome_b = _in_thread(
                lambda: b.append([event("course-1")], boundary("course-1", after=head))
            )
            _wait_for(lambda: b.store.stats.retries > 0)  # B met A's transaction
            release.set()
            thread_a.join()
            thread_b.join()
        finally:
            release.set()
            del batch_writer.PAUSE_POINTS["conditioned"]
        assert outcome_a == [head + 1]
        assert isinstance(outcome_b[0], IntegrityError), outcome_b
        assert [e.position for e in a.read(DCBQuery([DCBQueryItem(tags=["course-1"])]))] == [
            head,
            head + 1,
        ]
    finally:
        first.close()
        second.close()


def test_appends_sharing_a_transaction_see_each_other(recorder: MongoDCBRecorder) -> None:
    """Two appends queued behind a paused one form the next batch (one transaction): the
    second's condition is refused by the first's event, then by that committed event;
    a third, unrelated, commits in the same batch."""
    head = recorder.append([event("warm-up")])
    paused, release = _pause_first("checked")
    try:
        thread_x, _ = _in_thread(lambda: recorder.append([event("x")]))
        assert paused.wait(30)
        group = recorder.store._group
        assert group is not None
        calls = [
            lambda: recorder.append([event("seat-9")], boundary("seat-9", after=head)),
            lambda: recorder.append([event("seat-9")], boundary("seat-9", after=head)),
            lambda: recorder.append([event("seat-10")], boundary("seat-10", after=head)),
        ]
        started = []
        for index, call in enumerate(calls):
            started.append(_in_thread(call))
            _wait_for(lambda index=index: group.queued == index + 1)  # in this order
        transactions = recorder.store.stats.transactions
        release.set()
        thread_x.join()
        for thread, _ in started:
            thread.join()
    finally:
        release.set()
        del batch_writer.PAUSE_POINTS["checked"]
    outcomes = [outcome[0] for _, outcome in started]
    assert isinstance(outcomes[1], IntegrityError), outcomes
    assert sorted([outcomes[0], outcomes[2]]) == [head + 2, head + 3]
    assert recorder.store.stats.transactions == transactions + 2  # x, then the batch
    positions = [e.position for e in recorder.read()]
    assert positions == list(range(1, head + 4))  # gap-free, the refused one took none


def test_positions_are_gap_free_in_commit_order_under_concurrent_conditions(
    recorder: MongoDCBRecorder,
) -> None:
    """Ten threads each try to take one of three seats (a boundary on the seat's tag):
    exactly one wins each seat, and the positions are 1..n with no gap."""

    def take(seat: str) -> int | None:
        response = recorder.read(DCBQuery([DCBQueryItem(tags=[seat])]))
        if list(response):
            return None
        try:
            return recorder.append([event(seat)], boundary(seat, after=response.head))
        except IntegrityError:
            return None

    threads = [_in_thread(lambda i=i: take(f"seat-{i % 3}")) for i in range(10)]
    for thread, _ in threads:
        thread.join()
    won = [outcome[0] for _, outcome in threads if outcome[0] is not None]
    events = list(recorder.read())
    assert sorted(won) == [e.position for e in events] == [1, 2, 3]
    assert sorted(tag for e in events for tag in e.event.tags) == ["seat-0", "seat-1", "seat-2"]


QUERIES = [
    DCBQuery([DCBQueryItem(tags=["a"])]),
    DCBQuery([DCBQueryItem(tags=["a", "b"], types=["T1", "T2"])]),
    DCBQuery([DCBQueryItem(types=["T1", "T2"])]),
    DCBQuery([DCBQueryItem(types=["T1"], tags=["b"]), DCBQueryItem(tags=["c"])]),
]


@pytest.mark.parametrize("query", QUERIES)
def test_every_scan_of_a_query_is_served_by_a_dcb_index(
    recorder: MongoDCBRecorder, server_uri: str, query: DCBQuery
) -> None:
    for i in range(30):
        recorder.append([event("a", "b", "c"[: i % 2], type_=f"T{i % 3}")])
    planned = scans(query, 5, 25)
    assert planned
    with MongoClient(server_uri) as client:
        db = client[recorder.datastore.database_name]
        for scan in planned:
            command: Document = {
                "find": recorder.events_collection,
                "filter": scan.filter,
                "sort": {"sequence": 1},
            }
            plan = db.command("explain", command)["queryPlanner"]["winningPlan"]
            found = set(stages(plan))
            assert "COLLSCAN" not in found, plan
            assert "IXSCAN" in found, plan
            name = "dcb_tags" if "data.tags" in scan.filter else "dcb_types"
            assert f"'{name}'" in repr(plan), plan
