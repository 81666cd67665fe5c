"""One writer, one event per append: raw PyMongo, esmongo, and aett-mongodb in one run.

    python benchmarks/bench_sequential.py [--quick]
    PYTHONPATH=/path/to/aett-site python benchmarks/bench_sequential.py  # with aett-mongodb

Rows, each sequential over 100 streams (aett-mongodb's benchmark shape), on one server:
- raw: one PyMongo transaction per event, counter `$inc` + `insert_one`, no version check;
- esmongo `append` of 1 event to a new stream (NO_STREAM: no version check at all, the
  shape bench_store.py measures);
- esmongo `append` of 1 event with the exact expected version, to streams it wrote;
- the same after a `read_stream` of the stream (the head is then a read, not a write);
- `Repository.save` of one event on aggregates kept by the caller;
- aett-mongodb `CommitStore.commit` of one event (a counter `$inc`, then `insert_one`, no
  transaction), when `aett.mongodb` is importable. It is never a project dependency:
  `pip install --no-deps --target DIR aett-mongodb aett-domain aett-eventstore
  multipledispatch`, then PYTHONPATH=DIR. Its client uses the same URI (the embedded
  server's has retryWrites=false).
Rates are events over the time spent inside the timed calls (set-up and the reads of the
"head read" row are outside). Each pass runs the rows in order, then the next pass in
reverse order, so that a machine getting busier or quieter does not favour one side.
Targets (issue 14): exact append and Repository.save >= 0.8x raw, and >= aett.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

sys.path.insert(0, str(Path(__file__).parent))

from bench_store import credit, raw_doc
from common import Stopwatch, Timing, benchmark_server, console, database, print_table
from esmongo import NO_STREAM, Aggregate, EventStore, NewEvent, Repository, applies
from esmongo.codec import Document
from esmongo.model import EventLike
from esmongo.store.event_store import EVENT_INDEXES

DURABLE = WriteConcern("majority", j=True)
STREAMS = 100


class Tally(Aggregate):
    aggregate_type = "tally"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.count = 0

    def add(self) -> None:
        self.raise_event("tally.added", {"n": self.count + 1})

    @applies("tally.added")
    def _added(self, event: EventLike) -> None:
        self.count += 1


async def raw(db: AsyncDatabase[Document], rounds: int, tag: str) -> Timing:
    events = db.get_collection("raw_events", write_concern=DURABLE)
    counters = db.get_collection("raw_counters")
    watch = Stopwatch()
    for r in range(1, rounds + 1):
        for i in range(STREAMS):
            with watch.lap():
                async with (
                    db.client.start_session() as session,
                    await session.start_transaction(write_concern=DURABLE),
                ):
                    doc = await counters.find_one_and_update(
                        {"_id": "seq"},
                        {"$inc": {"value": 1}},
                        return_document=ReturnDocument.AFTER,
                        session=session,
                    )
                    assert doc is not None
                    await events.insert_one(raw_doc(doc["value"], f"{tag}{i}", r), session=session)
    return watch.timing("raw txn: $inc + insert_one", rounds * STREAMS)


async def new_streams(store: EventStore, rounds: int, tag: str) -> Timing:
    watch = Stopwatch()
    for n in range(rounds * STREAMS):
        with watch.lap():
            await store.append("account", f"{tag}{n}", [NewEvent("x.added", credit(1))], NO_STREAM)
    return watch.timing("append(1), new stream (NO_STREAM)", rounds * STREAMS)


async def exact(store: EventStore, rounds: int, tag: str, *, read_first: bool) -> Timing:
    for i in range(STREAMS):
        await store.append("account", f"{tag}{i}", [NewEvent("x.added", credit(1))], NO_STREAM)
    watch = Stopwatch()
    for r in range(1, rounds + 1):
        for i in range(STREAMS):
            if read_first:  # outside the lap: only the append is timed
                async for _ in store.read_stream("account", f"{tag}{i}", from_version=r):
                    pass
            with watch.lap():
                await store.append("account", f"{tag}{i}", [NewEvent("x.added", credit(r))], r)
    label = "append(1), exact version" + (", head read" if read_first else ", head written")
    return watch.timing(label, rounds * STREAMS)


async def saves(store: EventStore, rounds: int, tag: str) -> Timing:
    repo = Repository(store, Tally)
    tallies = [Tally(f"{tag}{i}") for i in range(STREAMS)]
    watch = Stopwatch()
    for _ in range(rounds):
        for tally in tallies:
            tally.add()
            with watch.lap():
                await repo.save(tally)
    return watch.timing("Repository.save (1 event)", rounds * STREAMS)


def aett_commits(uri: str, db_name: str, rounds: int, tag: str) -> Timing | None:
    try:
        from aett.eventstore import Commit, DomainEvent, EventMessage, TopicMap
        from aett.mongodb import CommitStore, PersistenceManagement
    except ImportError:
        return None

    class Added(DomainEvent):
        n: int

    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        client.drop_database(db_name)
        db = client[db_name]  # its own: aett's `counters` would meet esmongo's
        topics = TopicMap()
        topics.register(Added)
        PersistenceManagement(db, topics).initialize()
        store = CommitStore(db, topics)
        watch = Stopwatch()
        for r in range(1, rounds + 1):
            for i in range(STREAMS):
                stream = f"{tag}{i}"
                body = Added(source=stream, timestamp=_now(), version=r, n=r)
                commit = Commit(
                    tenant_id="bench",
                    stream_id=stream,
                    stream_revision=r,
                    commit_id=uuid.uuid4(),
                    commit_sequence=r,
                    commit_stamp=_now(),
                    headers={},
                    events=[EventMessage(body=body)],
                    checkpoint_token=0,
                )
                with watch.lap():
                    store.commit(commit)
        return watch.timing("aett-mongodb CommitStore.commit (1 event)", rounds * STREAMS)
    finally:
        client.drop_database(db_name)
        client.close()


def timed(timing: Timing) -> Timing:
    """The rate over the time inside the timed calls only."""
    return Timing(timing.label, timing.latencies, timing.items, sum(timing.latencies))


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def main(quick: bool) -> None:
    rounds = 2 if quick else 4
    with benchmark_server() as uri:
        async with database(uri, "bench_sequential") as db:
            await db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
            await db.get_collection("raw_counters").update_one(
                {"_id": "seq"}, {"$setOnInsert": {"value": 0}}, upsert=True
            )
            store = EventStore(db)
            await store.init()
            await raw(db, 1, "warm")  # connections, caches
            await new_streams(store, 1, "warm")

            def rows(p: str) -> list[tuple[str, Callable[[], Awaitable[Timing | None]]]]:
                return [
                    ("raw", lambda: raw(db, rounds, f"{p}r")),
                    ("new", lambda: new_streams(store, rounds, f"{p}n")),
                    ("exact", lambda: exact(store, rounds, f"{p}e", read_first=False)),
                    ("read", lambda: exact(store, rounds, f"{p}x", read_first=True)),
                    ("save", lambda: saves(store, rounds, f"{p}s")),
                    (
                        "aett",
                        lambda: asyncio.to_thread(
                            aett_commits, uri, f"{db.name}_aett_{p}", rounds, "a"
                        ),
                    ),
                ]

            passes: list[dict[str, Timing]] = []
            for n in range(2):
                order = rows(f"p{n}")
                results: dict[str, Timing] = {}
                for key, run in order if n == 0 else list(reversed(order)):
                    timing = await run()
                    if timing is not None:
                        results[key] = timed(timing)
                passes.append(results)
    load = os.getloadavg()[0]
    for n, results in enumerate(passes):
        base = results["raw"].rate
        print_table(
            f"Pass {n + 1} ({'forward' if n == 0 else 'reverse'} order), one writer",
            ["operation", "events/s", "p50 ms", "p99 ms", "vs raw"],
            [
                (
                    t.label,
                    f"{t.rate:,.0f}",
                    f"{t.p50_ms:.2f}",
                    f"{t.p99_ms:.2f}",
                    f"{t.rate / base:.2f}x",
                )
                for t in results.values()
            ],
        )
    summary = []
    for results in passes:
        base = results["raw"].rate
        parts = [f"{k} {results[k].rate / base:.2f}x" for k in ("new", "exact", "read", "save")]
        if "aett" in results:
            parts.append(f"save/aett {results['save'].rate / results['aett'].rate:.2f}x")
        summary.append(", ".join(parts))
    console.print(f"load average {load:.1f}; ratios: " + " | ".join(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    asyncio.run(main(parser.parse_args().quick))
