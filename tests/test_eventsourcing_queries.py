"""Every query shape esmongo.eventsourcing sends is served by an index on the embedded
server (where a range on `_id`, `$and` and `$or` scan the collection: docs/mongodb.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment
from pymongo import MongoClient

from esmongo.codec import Document
from esmongo.eventsourcing import MongoApplicationRecorder, MongoFactory
from esmongo.eventsourcing.recorders import events_query, notifications_query
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)


def stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan["stage"]
        for value in plan.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from stages(item)


@pytest.fixture
def recorder() -> Iterator[MongoApplicationRecorder]:
    factory = MongoFactory(Environment("Plans", dict(os.environ)))
    made = factory.application_recorder()
    assert isinstance(made, MongoApplicationRecorder)
    for _ in range(20):
        originator = uuid4()
        made.insert_events([StoredEvent(originator, v, f"topic{v % 3}", b"x") for v in range(5)])
    yield made
    factory.close()


ORIGINATOR = str(uuid4())
EVENT_SHAPES = [
    (events_query(ORIGINATOR, gt, lte), order, limit)
    for gt, lte in [(None, None), (1, None), (None, 3), (1, 3)]
    for order in (1, -1)
    for limit in (0, 1)
]
NOTIFICATION_SHAPES = [notifications_query(1, 10), notifications_query(5, 5)]


@pytest.mark.parametrize(("query", "order", "limit"), EVENT_SHAPES)
def test_events_of_an_originator_are_read_by_the_ordering_index(
    recorder: MongoApplicationRecorder, server_uri: str, query: Document, order: int, limit: int
) -> None:
    plan = _winning_plan(server_uri, recorder, query, {"aggregateVersion": order}, limit)
    assert "COLLSCAN" not in set(stages(plan)), plan
    assert "IXSCAN" in set(stages(plan)), plan
    assert '"aggregate_ordering"' in repr(plan).replace("'", '"'), plan


@pytest.mark.parametrize("query", NOTIFICATION_SHAPES)  # topics are filtered on the client
def test_notifications_are_read_by_an_index(
    recorder: MongoApplicationRecorder, server_uri: str, query: Document
) -> None:
    plan = _winning_plan(server_uri, recorder, query, None, 0)  # sorted on the client
    assert "COLLSCAN" not in set(stages(plan)), plan
    assert "IXSCAN" in set(stages(plan)), plan


def _winning_plan(
    uri: str,
    recorder: MongoApplicationRecorder,
    query: Document,
    sort: Document | None,
    limit: int,
) -> Any:
    with MongoClient(uri) as client:
        db = client[recorder.datastore.database_name]
        command: Document = {"find": recorder.events_collection, "filter": query}
        if sort:
            command["sort"] = sort
        if limit:
            command["limit"] = limit
        explained = db.command("explain", command)
    return explained["queryPlanner"]["winningPlan"]
