"""An `eventsourcing` application's events are esmongo events: esmongo's EventStore and
`esmongo check --log` read them, and the application reads what esmongo appends in its shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, MongoClient

from es_apps import Order, Orders
from esmongo import EventStore, NewEvent
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.store import AppendRequest
from eventsourcing_env import mongo_env  # noqa: F401  (the autouse fixture)

ESMONGO = str(Path(sys.executable).with_name("esmongo"))
LOG = "orders_events"


def esmongo(server_uri: str, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": database,
        "COLUMNS": "200",
    }
    return subprocess.run([ESMONGO, *args], env=env, capture_output=True, text=True, timeout=120)


async def test_esmongo_reads_and_checks_an_eventsourcing_log(
    client: AsyncMongoClient[Document], server_uri: str
) -> None:
    orders = Orders()
    placed = [orders.place(f"item {n}") for n in range(5)]
    orders.close()
    database = os.environ["MONGODB_DATABASE"]
    db = client.get_database(database, codec_options=CODEC_OPTIONS)
    store = EventStore(db, collection=LOG, sequence=LOG)

    events = [e async for e in store.read_all()]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert [e.aggregate_id for e in events] == [str(p) for p in placed]
    assert {e.aggregate_type for e in events} == {"eventsourcing"}
    assert {e.event_type for e in events} == {"es_apps:Order.Placed"}
    assert {e.aggregate_version for e in events} == {1}
    assert isinstance(events[0].data["state"], bytes)
    assert await store.head_sequence() == 5

    listed = esmongo(server_uri, database, "events", "list", "--log", LOG)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("es_apps:Order.Placed") == 5, listed.stdout
    assert all(f"eventsourcing/{order}" in listed.stdout for order in placed), listed.stdout
    tail = esmongo(server_uri, database, "events", "tail", "-n", "2", "--log", LOG)
    assert tail.returncode == 0, tail.stderr
    assert [line.split()[0] for line in tail.stdout.splitlines()] == ["4", "5"]

    checked = esmongo(server_uri, database, "check", "--log", LOG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "5 events, 5 streams, head #5, counter 5" in checked.stderr
    assert "healthy" in checked.stderr

    await db[LOG].delete_one({"sequence": 3})  # damage: check must see it
    damaged = esmongo(server_uri, database, "check", "--log", LOG)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert f"#3 missing from {LOG} and {LOG}_archive" in damaged.stdout

    refused = esmongo(server_uri, database, "check", "--log", LOG, "--repair")
    assert refused.returncode == 2
    assert "--repair is for the main log only" in refused.stderr


async def test_the_application_reads_events_esmongo_appended_in_its_shape(
    client: AsyncMongoClient[Document],
) -> None:
    orders = Orders()
    first = orders.place("by the library")
    order = Order("by esmongo")
    stored = orders.mapper.to_stored_event(order.collect_events()[0])
    db = client.get_database(os.environ["MONGODB_DATABASE"], codec_options=CODEC_OPTIONS)
    store = EventStore(db, collection=LOG, sequence=LOG)
    await store.init()
    event = NewEvent(stored.topic, {"state": stored.state})
    request = AppendRequest(
        "eventsourcing", str(order.id), [event], versions=[stored.originator_version]
    )
    await store.append_streams([request])

    assert orders.repository.get(order.id).item == "by esmongo"
    assert orders.repository.get(first).item == "by the library"
    log = orders.recorder.select_notifications(start=None, limit=10)
    assert [(n.id, n.originator_id) for n in log] == [(1, first), (2, order.id)]
    orders.close()
    await store.writers.close()


class Payments(Orders):
    """A second application in the same database."""


def test_two_applications_in_one_database_keep_their_own_sequences() -> None:
    orders, payments = Orders(), Payments()
    for n in range(3):
        orders.place(f"order {n}")
        payments.place(f"payment {n}")
    payments.place("one more")
    assert orders.factory.datastore.database_name == payments.factory.datastore.database_name
    order_ids = [n.id for n in orders.recorder.select_notifications(start=None, limit=10)]
    payment_ids = [n.id for n in payments.recorder.select_notifications(start=None, limit=10)]
    assert order_ids == [1, 2, 3]
    assert payment_ids == [1, 2, 3, 4]
    orders.close()
    payments.close()


def test_an_application_prefix_chooses_its_own_database(monkeypatch: Any) -> None:
    elsewhere = f"{os.environ['MONGODB_DATABASE']}_orders"
    monkeypatch.setenv("ORDERS_MONGODB_DATABASE", elsewhere)
    orders, payments = Orders(), Payments()
    try:
        assert orders.factory.datastore.database_name == elsewhere
        assert payments.factory.datastore.database_name == os.environ["MONGODB_DATABASE"]
        orders.place("x")
        with MongoClient(os.environ["MONGODB_URI"]) as client:
            assert client[elsewhere]["orders_events"].count_documents({}) == 1
            client.drop_database(elsewhere)
    finally:
        orders.close()
        payments.close()
