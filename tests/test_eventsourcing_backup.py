"""`esmongo backup` and restore cover `eventsourcing` applications' logs: each log of its
own (events, counter, archive), its tracking records cut with it, a DCB application's log;
restored into an empty database, the library reads the same events, its follower resumes
where it was, appends go on without a gap, and `esmongo check --log`/`verify --log` pass."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.dcb.api import DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.persistence import OperationalError, StoredEvent, Tracking
from eventsourcing.system import SingleThreadedRunner
from pymongo import AsyncMongoClient

from es_apps import Fulfilment, Orders, system
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.ops.backup import backup, restore
from esmongo.ops.backup import own_logs as backup_logs
from esmongo.store.collections import ACTIVE, META
from esmongo.store.layout import LOG_DATABASE, LayoutError, use_log_database
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)
from test_eventsourcing_crossread import esmongo

LOGS = ("orders_events", "fulfilment_events", "orders_snapshots", "dcbapplication_events")


def _notifications(app: Any) -> list[tuple[Any, ...]]:
    found = app.recorder.select_notifications(start=None, limit=1000)
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in found]


@pytest.mark.parametrize("split", [False, True], ids=["one database", "log database"])
async def test_a_backup_restores_eventsourcing_applications_into_an_empty_database(
    client: AsyncMongoClient[Document],
    server_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    split: bool,
) -> None:
    """With a log database (esmongo.store.layout), the applications' logs live there, where
    the writer role may only insert, and a backup and restore carry them there."""
    monkeypatch.setenv("IS_SNAPSHOTTING_ENABLED", "yes")
    source = os.environ["MONGODB_DATABASE"]
    target = f"{source}_restored"
    if split:
        await use_log_database(client.get_database(source), f"{source}_log")
        await use_log_database(client.get_database(target), f"{target}_log")
    runner: SingleThreadedRunner[Any] = SingleThreadedRunner(system())
    runner.start()
    orders, fulfilment = runner.get(Orders), runner.get(Fulfilment)
    placed = [orders.place(f"item {n}") for n in range(5)]
    orders.take_snapshot(placed[0])
    assert len(fulfilment.shipments()) == 5
    before = {"orders": _notifications(orders), "fulfilment": _notifications(fulfilment)}
    runner.stop()
    dcb = DCBApplication()
    dcb.recorder.append([DCBEvent("Registered", b"1", ["course-1"])])
    dcb.recorder.append([DCBEvent("Joined", b"2", ["course-1", "student-1"])])
    dcb.close()

    if split:
        in_log = set(await client.get_database(f"{source}_log").list_collection_names())
        in_main = set(await client.get_database(source).list_collection_names())
        assert set(LOGS) <= in_log and not set(LOGS) & in_main
        assert "fulfilment_tracking" in in_main  # updated: it stays in the main database
    report = await backup(client.get_database(source, codec_options=CODEC_OPTIONS), tmp_path)
    assert report.own_logs == {
        "orders_events": 5,
        "orders_snapshots": 1,
        "fulfilment_events": 5,
        "fulfilment_snapshots": 0,
        "dcbapplication_events": 2,
    }
    assert report.counts["fulfilment_tracking"] == 1

    monkeypatch.setenv("MONGODB_DATABASE", target)
    try:
        restored = await restore(
            client.get_database(target, codec_options=CODEC_OPTIONS),
            tmp_path / source,
            erasures=[],
        )
        assert restored.own_logs == report.own_logs

        orders, fulfilment = Orders(), Fulfilment()
        assert {"orders": _notifications(orders), "fulfilment": _notifications(fulfilment)} == (
            before
        )
        assert [orders.repository.get(p).item for p in placed] == [f"item {n}" for n in range(5)]
        assert fulfilment.recorder.max_tracking_id("Orders") == 5  # resumes, not again
        assert orders.snapshots is not None
        assert [s.originator_id for s in orders.snapshots.get(placed[0])] == [placed[0]]
        orders.place("after the restore")
        assert [n[0] for n in _notifications(orders)] == [1, 2, 3, 4, 5, 6]
        orders.close()
        fulfilment.close()
        dcb = DCBApplication()
        read = dcb.recorder.read(DCBQuery([DCBQueryItem(tags=["course-1"])]))
        assert [(e.position, e.event.type, e.event.data) for e in read] == [
            (1, "Registered", b"1"),
            (2, "Joined", b"2"),
        ]
        dcb.close()

        for log in LOGS:
            checked = esmongo(server_uri, target, "check", "--log", log)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert "healthy" in checked.stderr, checked.stderr
            verified = esmongo(server_uri, target, "verify", "--log", log)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        if split:
            restored_log = client.get_database(f"{target}_log")
            assert set(LOGS) <= set(await restored_log.list_collection_names())
    finally:
        await client.drop_database(target)
        for name in (f"{source}_log", f"{target}_log"):
            await client.drop_database(name)


async def test_a_log_database_is_set_before_any_log_has_events_and_found_by_the_apps(
    client: AsyncMongoClient[Document],
) -> None:
    """An application's log written in the main database is not hidden by a log database
    set afterwards: setting it is refused, and an application finding its log in the main
    database while the layout says otherwise refuses to start, saying how to move it."""
    source = os.environ["MONGODB_DATABASE"]
    orders = Orders()
    orders.place("before the layout")
    orders.close()
    main = client.get_database(source)
    with pytest.raises(LayoutError, match="events in log orders_events"):
        await use_log_database(main, f"{source}_log")
    layout = {"$set": {LOG_DATABASE: f"{source}_log"}}  # as if set by hand, past the check
    await main[META].update_one({"_id": ACTIVE}, layout, upsert=True)
    try:
        with pytest.raises(OperationalError, match="move the collection there"):
            Orders()
    finally:
        await client.drop_database(f"{source}_log")


async def test_tracking_records_are_cut_in_the_snapshot_of_the_heads(
    client: AsyncMongoClient[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower records events and its tracking record (one transaction) after the
    backup read the heads and before it reads the tracking records: the cut holds neither
    (a tracking record ahead of its log's events would skip them after a restore)."""
    runner: SingleThreadedRunner[Any] = SingleThreadedRunner(system())
    runner.start()
    runner.get(Orders).place("one")
    fulfilment = runner.get(Fulfilment)
    db = client.get_database(os.environ["MONGODB_DATABASE"], codec_options=CODEC_OPTIONS)

    async def follower_goes_on() -> None:
        stored = StoredEvent(uuid4(), 1, "es_apps:Shipment.Created", b"{}")
        fulfilment.recorder.insert_events([stored], tracking=Tracking("Orders", 2))

    monkeypatch.setitem(backup_logs.PAUSE_POINTS, "counted", follower_goes_on)
    try:
        found = await backup_logs.cut(db)
        assert fulfilment.recorder.max_tracking_id("Orders") == 2  # it did commit meanwhile
    finally:
        runner.stop()
    logs = {log.events: log for log in found.logs}
    assert logs["fulfilment_events"].head == 1
    assert logs["fulfilment_events"].positions == ("fulfilment_tracking",)
    assert [dict(d) for d in found.positions["fulfilment_tracking"]] == [
        {"_id": "Orders", "notificationId": 1}
    ]
