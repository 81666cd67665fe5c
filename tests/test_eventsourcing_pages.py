"""Complete pages of notifications are served again without a query
(esmongo.eventsourcing.pages); incomplete ones are read each time; a log replaced under a
recorder (a restore into the same database) is read again once the recorder sees it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.utils import Environment
from pymongo import AsyncMongoClient, MongoClient

from command_counter import FindCounter
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.eventsourcing import MongoApplicationRecorder, MongoFactory
from esmongo.eventsourcing.pages import NOTIFICATION_BYTES, CompletePages
from esmongo.ops.backup import backup, restore
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)


class Counted:
    """An application recorder whose notification reads go through a client that names
    every query it sends."""

    def __init__(self, server_uri: str) -> None:
        self.factory = MongoFactory(Environment("Pages", dict(os.environ)))
        made = self.factory.application_recorder()
        assert isinstance(made, MongoApplicationRecorder)
        self.recorder = made
        self.finds = FindCounter()
        self.client: MongoClient[Document] = MongoClient(server_uri, event_listeners=[self.finds])
        made.reads = self.client.get_database(
            os.environ["MONGODB_DATABASE"], codec_options=CODEC_OPTIONS
        ).get_collection(made.events_collection)

    def close(self) -> None:
        self.factory.close()
        self.client.close()


@pytest.fixture
def counted(server_uri: str) -> Iterator[Counted]:
    made = Counted(server_uri)
    yield made
    made.close()


def _insert(recorder: MongoApplicationRecorder, n: int, topic: str = "topic") -> None:
    originator = uuid4()
    recorder.insert_events([StoredEvent(originator, v, topic, b"x") for v in range(1, n + 1)])


def _ids(found: list[Notification] | object) -> list[int]:
    assert isinstance(found, list)
    return [n.id for n in found]


def test_a_complete_page_is_served_again_without_a_query(counted: Counted) -> None:
    recorder = counted.recorder
    _insert(recorder, 25)
    first = recorder.select_notifications(start=1, limit=10)
    assert counted.finds.commands == ["find"]
    again = recorder.select_notifications(start=1, limit=10)
    assert counted.finds.commands == ["find"]
    assert again == first and _ids(again) == list(range(1, 11))
    # ending at a stop, or after `start` excluded: the same rule, its own range
    assert _ids(recorder.select_notifications(start=11, limit=10, stop=15)) == list(range(11, 16))
    assert _ids(recorder.select_notifications(start=10, limit=5, inclusive_of_start=False)) == (
        list(range(11, 16))
    )
    assert counted.finds.commands == ["find", "find"]
    # a caller that changes the list it got does not change the page
    got = recorder.select_notifications(start=1, limit=10)
    assert isinstance(got, list)
    got.clear()
    assert _ids(recorder.select_notifications(start=1, limit=10)) == list(range(1, 11))
    assert counted.finds.commands == ["find", "find"]


def test_an_incomplete_page_is_read_again_and_cached_once_complete(counted: Counted) -> None:
    recorder = counted.recorder
    _insert(recorder, 5)
    assert _ids(recorder.select_notifications(start=1, limit=10)) == list(range(1, 6))
    assert _ids(recorder.select_notifications(start=1, limit=10)) == list(range(1, 6))
    assert counted.finds.commands == ["find", "find"]
    _insert(recorder, 5)
    assert _ids(recorder.select_notifications(start=1, limit=10)) == list(range(1, 11))
    assert _ids(recorder.select_notifications(start=1, limit=10)) == list(range(1, 11))
    assert counted.finds.commands == ["find"] * 3


def test_pages_by_topic_are_not_cached(counted: Counted) -> None:
    recorder = counted.recorder
    _insert(recorder, 10, topic="a")
    counted.finds.commands.clear()
    for _ in range(2):
        found = recorder.select_notifications(start=1, limit=10, topics=["a"])
        assert _ids(found) == list(range(1, 11))
    assert counted.finds.commands == ["find", "find"]  # the head is read from counters


async def test_a_log_restored_under_the_recorder_is_read_again(
    counted: Counted, client: AsyncMongoClient[Document], tmp_path: Path
) -> None:
    """The log is dropped and an older backup restored into the same database, and another
    process writes other events at the same ids: once the recorder reads the head, the
    pages it kept are gone (the restore moved the log counter's generation)."""
    recorder = counted.recorder
    _insert(recorder, 10)
    db = client.get_database(os.environ["MONGODB_DATABASE"], codec_options=CODEC_OPTIONS)
    await backup(db, tmp_path)
    _insert(recorder, 10, topic="old")
    old = recorder.select_notifications(start=11, limit=10)
    assert {n.topic for n in old} == {"old"}
    assert len(recorder.pages) == 1

    await db.drop_collection(recorder.events_collection)
    await restore(db, tmp_path / db.name, drop_state=True, erasures=[])
    other = Counted(os.environ["MONGODB_URI"])
    try:
        _insert(other.recorder, 10, topic="new")
    finally:
        other.close()

    assert recorder.max_notification_id() == 20
    assert len(recorder.pages) == 0
    found = recorder.select_notifications(start=11, limit=10)
    assert {n.topic for n in found} == {"new"}


async def test_a_restore_is_seen_by_the_recorders_own_append(
    counted: Counted, client: AsyncMongoClient[Document], tmp_path: Path
) -> None:
    recorder = counted.recorder
    _insert(recorder, 10)
    db = client.get_database(os.environ["MONGODB_DATABASE"], codec_options=CODEC_OPTIONS)
    await backup(db, tmp_path)
    _insert(recorder, 10, topic="old")
    recorder.select_notifications(start=11, limit=10)
    await db.drop_collection(recorder.events_collection)
    await restore(db, tmp_path / db.name, drop_state=True, erasures=[])

    _insert(recorder, 10, topic="new")  # numbered 11..20 again, in the restored log
    found = recorder.select_notifications(start=11, limit=10)
    assert {n.topic for n in found} == {"new"}


def test_a_read_that_finds_the_log_shorter_drops_the_pages(counted: Counted) -> None:
    """Ids below a cached page's end that are missing: the log is not the one the pages
    were read from (here, emptied by hand; esmongo never does so without moving the
    counter's generation)."""
    recorder = counted.recorder
    _insert(recorder, 20)
    recorder.select_notifications(start=11, limit=10)
    assert len(recorder.pages) == 1
    counted.client.get_database(os.environ["MONGODB_DATABASE"])[
        recorder.events_collection
    ].delete_many({})
    assert recorder.select_notifications(start=1, limit=10) == []
    assert len(recorder.pages) == 0
    assert recorder.select_notifications(start=11, limit=10) == []


def _page(low: int, high: int, state: bytes = b"x") -> list[Notification]:
    return [
        Notification(id=i, originator_id=uuid4(), originator_version=1, topic="t", state=state)
        for i in range(low, high + 1)
    ]


def test_a_read_begun_before_the_pages_were_dropped_does_not_put_its_page() -> None:
    pages = CompletePages()
    pages.seen((0, 0, 0, 0))
    epoch = pages.epoch()  # a read begins
    pages.seen((0, 0, 0, 1))  # a restore is seen meanwhile
    pages.put(1, 10, _page(1, 10), epoch)
    assert pages.get(1, 10) is None
    pages.put(1, 10, _page(1, 10), pages.epoch())
    assert pages.get(1, 10) is not None


def test_pages_are_bounded_by_bytes_least_recently_used_first() -> None:
    weight = 10 * (100 + NOTIFICATION_BYTES)
    pages = CompletePages(capacity=2 * weight)
    for low in (1, 11, 21):
        pages.put(low, low + 9, _page(low, low + 9, b"s" * 100), pages.epoch())
        if low == 11:
            assert pages.get(1, 10) is not None  # used: 11..20 is now the oldest
    assert len(pages) == 2
    assert pages.get(11, 20) is None
    assert pages.get(1, 10) is not None and pages.get(21, 30) is not None
