"""esmongo.eventsourcing against raw PyMongo (same server, same run) and the library's SQLite
module (same machine): the library's own insert and select measurements and its concurrent
shapes, through the library's synchronous recorder API.

Rows:
- one insert of 1 event, one caller (the library's test_performance): raw is a PyMongo
  transaction with the counter `$inc` and `insert_one` of the same document into a
  collection with the same indexes (EVENT_INDEXES). The contenders take turns in rounds
  of ROUND inserts. Target: >= 0.8x raw.
- ten threads inserting 1 event each at once (test_concurrent_throughput's shape with
  single events): raw is one such transaction per insert, retried on write conflicts by
  PyMongo's with_transaction. Target: >= 3x raw.
- 10,000 events: ten threads, inserts of 100 events (test_concurrent_no_conflicts' writes,
  without its polling readers). Target for the library's test itself: < 10 s.
- select_events (a 10-event stream) and select_notifications (10 from a position): raw is
  the same find on the same collection.

Run: python benchmarks/bench_eventsourcing.py [--inserts 200] [--threaded 30] [--events 10000]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    StoredEvent,
)
from eventsourcing.utils import Environment
from pymongo import MongoClient, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

sys.path.insert(0, str(Path(__file__).parent))

from common import Timing, benchmark_server, console, print_table
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import utc_now
from esmongo.store.event_store import EVENT_INDEXES

DURABLE = WriteConcern("majority", j=True)
THREADS = 10


class Raw:
    """The baseline: what an insert needs done, by hand, with PyMongo's sync client."""

    def __init__(self, client: MongoClient[Document], database: str) -> None:
        self.client = client
        db = client.get_database(database, codec_options=CODEC_OPTIONS)
        self.events = db.get_collection("raw_events", write_concern=DURABLE)
        self.events.create_indexes(EVENT_INDEXES)
        self.counters = db.get_collection("raw_counters", write_concern=DURABLE)
        self.lock = threading.Lock()

    def insert(self, stored: list[StoredEvent]) -> None:
        def body(session: ClientSession) -> None:
            counter = self.counters.find_one_and_update(
                {"_id": "seq"},
                {"$inc": {"value": len(stored)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            assert counter is not None
            first = int(counter["value"]) - len(stored) + 1
            docs = [_doc(s, first + i) for i, s in enumerate(stored)]
            if len(docs) == 1:
                self.events.insert_one(docs[0], session=session)
            else:
                self.events.insert_many(docs, session=session)

        with self.client.start_session() as session:
            session.with_transaction(
                body, read_concern=ReadConcern("snapshot"), write_concern=DURABLE
            )

    def select_events(self, originator: uuid.UUID) -> list[Document]:
        query = {"aggregateType": "eventsourcing", "aggregateId": str(originator)}
        return list(self.events.find(query, sort=[("aggregateVersion", 1)]))

    def select_notifications(self, start: int, limit: int) -> list[Document]:
        query = {"sequence": {"$gte": start, "$lte": start + limit - 1}}
        return list(self.events.find(query, sort=[("sequence", 1)], limit=limit))


def _doc(stored: StoredEvent, sequence: int) -> Document:
    return {
        "_id": sequence,
        "eventId": uuid.uuid4().hex,
        "eventType": stored.topic,
        "eventVersion": "1",
        "aggregateType": "eventsourcing",
        "aggregateId": str(stored.originator_id),
        "aggregateVersion": stored.originator_version,
        "data": {"state": stored.state},
        "metadata": {},
        "timestamp": utc_now(),
        "sequence": sequence,
    }


def _events(n: int = 1) -> list[StoredEvent]:
    originator = uuid.uuid4()
    return [StoredEvent(originator, v, "topic", b"state" * 20) for v in range(1, n + 1)]


ROUND = 20
"""Single inserts per contender per round: the contenders take turns (see `sequential`)."""


def sequential(
    contenders: list[tuple[str, Callable[[list[StoredEvent]], Any]]], n: int
) -> list[Timing]:
    """`n` single inserts by each contender, in rounds of ROUND taking turns (the order
    reversed every round), so that a change in the shared machine's load during the run
    falls on all of them alike rather than on whichever ran last."""
    for _, insert in contenders:
        for _ in range(5):
            insert(_events())
    latencies: list[list[float]] = [[] for _ in contenders]
    elapsed = [0.0 for _ in contenders]
    order = list(range(len(contenders)))
    done = 0
    while done < n:
        size = min(ROUND, n - done)
        for k in order:
            insert = contenders[k][1]
            started = time.perf_counter()
            for _ in range(size):
                t = time.perf_counter()
                insert(_events())
                latencies[k].append(time.perf_counter() - t)
            elapsed[k] += time.perf_counter() - started
        order.reverse()
        done += size
    return [Timing(name, latencies[k], n, elapsed[k]) for k, (name, _) in enumerate(contenders)]


def threaded(
    label: str, insert: Callable[[list[StoredEvent]], Any], jobs: int, per_insert: int
) -> Timing:
    latencies: list[float] = []
    lock = threading.Lock()

    def job(_: int) -> None:
        events = _events(per_insert)
        t = time.perf_counter()
        insert(events)
        with lock:
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(job, range(jobs)))
    return Timing(label, latencies, jobs * per_insert, time.perf_counter() - started)


def reads(label: str, read: Callable[[], Any], n: int) -> Timing:
    for _ in range(5):
        read()
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        read()
        latencies.append(time.perf_counter() - t)
    return Timing(label, latencies, n, time.perf_counter() - started)


def notification_reads(
    raw: Raw, mongo: ApplicationRecorder, sqlite: ApplicationRecorder, events: int, n: int
) -> list[tuple[str, Timing]]:
    """A new page each read (what one follower catching up reads once), then one page read
    again and again (what several followers of one leader, or a poller of one position,
    read): esmongo serves a complete page again from its cache (esmongo.eventsourcing.pages),
    raw PyMongo and SQLite query each time."""
    readers: list[tuple[str, Callable[[int, int], Any]]] = [
        ("raw", raw.select_notifications),
        ("esmongo", lambda start, limit: mongo.select_notifications(start, limit)),
        ("sqlite", lambda start, limit: sqlite.select_notifications(start, limit)),
    ]
    rows: list[tuple[str, Timing]] = []
    for name, select in readers:
        starts = iter(1 + 10 * (i % max(events // 10, 1)) for i in range(n + 5))
        timing = reads(name, functools.partial(_next_page, select, starts), n)
        rows.append((f"select_notifications(10), a new page each: {name}", timing))
    for name, select in readers:
        timing = reads(name, functools.partial(select, 100, 10), n)
        rows.append((f"select_notifications(10), the same page: {name}", timing))
    return rows


def _next_page(select: Callable[[int, int], Any], starts: Iterator[int]) -> Any:
    return select(next(starts), 10)


def recorder(env: dict[str, str]) -> tuple[InfrastructureFactory, ApplicationRecorder]:
    factory = InfrastructureFactory.construct(Environment("bench", env))
    return factory, factory.application_recorder()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inserts", type=int, default=200)
    parser.add_argument("--threaded", type=int, default=30, help="inserts per thread")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    database = f"bench_es_{uuid.uuid4().hex[:6]}"
    with benchmark_server() as uri, tempfile.TemporaryDirectory() as tmp:
        client: MongoClient[Document] = MongoClient(uri)
        raw = Raw(client, database)
        mongo_factory, mongo = recorder(
            {
                "PERSISTENCE_MODULE": "esmongo.eventsourcing",
                "MONGODB_URI": uri,
                "MONGODB_DATABASE": database,
            }
        )
        sqlite_factory, sqlite = recorder(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(Path(tmp) / "bench.sqlite"),
            }
        )
        contenders: list[tuple[str, Callable[[list[StoredEvent]], Any]]] = [
            ("raw PyMongo", raw.insert),
            ("esmongo.eventsourcing", mongo.insert_events),
            ("eventsourcing.sqlite", sqlite.insert_events),
        ]
        try:
            rows: list[tuple[str, Timing]] = []
            for (name, _), timing in zip(
                contenders, sequential(contenders, args.inserts), strict=True
            ):
                rows.append((f"1 insert, 1 caller: {name}", timing))
            for name, insert in contenders:
                timing = threaded(name, insert, THREADS * args.threaded, 1)
                rows.append((f"{THREADS} threads, 1 event each: {name}", timing))
            jobs = args.events // 100
            for name, insert in contenders:
                timing = threaded(name, insert, jobs, 100)
                rows.append((f"{args.events} events, {THREADS} threads x 100: {name}", timing))
            stream = _events(10)
            for insert in (raw.insert, mongo.insert_events, sqlite.insert_events):
                insert(stream)
            originator = stream[0].originator_id
            assert isinstance(originator, uuid.UUID)
            rows += [
                (
                    "select_events(10): raw",
                    reads("raw", lambda: raw.select_events(originator), args.reads),
                ),
                (
                    "select_events(10): esmongo",
                    reads("es", lambda: mongo.select_events(originator), args.reads),
                ),
                (
                    "select_events(10): sqlite",
                    reads("sq", lambda: sqlite.select_events(originator), args.reads),
                ),
            ]
            rows += notification_reads(raw, mongo, sqlite, args.events, args.reads)
        finally:
            mongo_factory.close()
            sqlite_factory.close()
            client.drop_database(database)
            client.close()
    table = []
    baseline: Timing | None = None
    for label, timing in rows:
        if label.endswith("raw PyMongo") or label.endswith(": raw"):
            baseline = timing
        ratio = f"{timing.rate / baseline.rate:.2f}x" if baseline else ""
        table.append(
            (
                label,
                f"{timing.rate:,.0f}",
                f"{timing.p50_ms:.2f}",
                f"{timing.p99_ms:.2f}",
                f"{timing.elapsed:.2f}",
                ratio,
            )
        )
    print_table(
        "eventsourcing persistence: esmongo vs raw PyMongo vs SQLite",
        ["measurement", "ops or events/s", "p50 ms", "p99 ms", "total s", "vs raw"],
        table,
    )
    console.print("targets: 1 insert >= 0.8x raw; 10 threads >= 3x raw; 10,000-event test < 10 s")


if __name__ == "__main__":
    main()
