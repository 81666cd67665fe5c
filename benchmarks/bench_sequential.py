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
The rows are interleaved one operation at a time (raw, then each esmongo row, then aett,
starting at a different row each step), so that a machine getting busier or quieter hits
them all alike: on this shared machine, rows run one after the other moved by 30% between
two runs of the same code. Rates are operations over the time spent inside the timed calls
(the reads of the "head read" row are outside); the p50 ratio is the one that stalls from
other work on the machine move least.
Targets (issue 14): exact append and Repository.save >= 0.8x raw, and >= aett.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).parent))

from bench_store import credit, raw_append
from common import Timing, benchmark_server, console, database, print_table
from esmongo import NO_STREAM, Aggregate, EventStore, NewEvent, Repository, applies
from esmongo.codec import Document
from esmongo.model import EventLike
from esmongo.store.event_store import EVENT_INDEXES

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


Op = Callable[[int, int], Awaitable[None]]
"""One timed operation for (round, stream)."""


def raw_op(db: AsyncDatabase[Document]) -> Op:
    async def op(r: int, i: int) -> None:
        await raw_append(db, f"r{i}", r)

    return op


def new_stream_op(store: EventStore) -> Op:
    async def op(r: int, i: int) -> None:
        await store.append("account", f"n{r}_{i}", [NewEvent("x.added", credit(1))], NO_STREAM)

    return op


async def exact_op(store: EventStore, tag: str) -> Op:
    for i in range(STREAMS):
        await store.append("account", f"{tag}{i}", [NewEvent("x.added", credit(1))], NO_STREAM)

    async def op(r: int, i: int) -> None:
        await store.append("account", f"{tag}{i}", [NewEvent("x.added", credit(r))], r)

    return op


def save_op(store: EventStore) -> Op:
    repo = Repository(store, Tally)
    tallies = [Tally(f"s{i}") for i in range(STREAMS)]

    async def op(r: int, i: int) -> None:
        tallies[i].add()
        await repo.save(tallies[i])

    return op


def aett_op(uri: str, db_name: str) -> tuple[Op, Callable[[], None]] | None:
    try:
        from aett.eventstore import Commit, DomainEvent, EventMessage, TopicMap
        from aett.mongodb import CommitStore, PersistenceManagement
    except ImportError:
        return None

    class Added(DomainEvent):
        n: int

    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    client.drop_database(db_name)
    db = client[db_name]  # its own: aett's `counters` would meet esmongo's
    topics = TopicMap()
    topics.register(Added)
    PersistenceManagement(db, topics).initialize()
    store = CommitStore(db, topics)

    async def op(r: int, i: int) -> None:
        stream = f"a{i}"
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
        store.commit(commit)  # synchronous, as aett is: nothing else runs meanwhile

    def close() -> None:
        client.drop_database(db_name)
        client.close()

    return op, close


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def main(quick: bool) -> None:
    rounds = 2 if quick else 5
    with benchmark_server() as uri:
        async with database(uri, "bench_sequential") as db:
            await db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
            await db.get_collection("raw_counters").update_one(
                {"_id": "seq"}, {"$setOnInsert": {"value": 0}}, upsert=True
            )
            store = EventStore(db)
            await store.init()
            read_op = await exact_op(store, "x")

            async def after_read(r: int, i: int) -> None:
                await read_op(r, i)

            rows: dict[str, tuple[str, Op]] = {
                "raw": ("raw txn: $inc + insert_one", raw_op(db)),
                "new": ("append(1), new stream (NO_STREAM)", new_stream_op(store)),
                "exact": ("append(1), exact version, head written", await exact_op(store, "e")),
                "read": ("append(1), exact version, head read", after_read),
                "save": ("Repository.save (1 event)", save_op(store)),
            }
            aett = aett_op(uri, f"{db.name}_aett")
            if aett is not None:
                rows["aett"] = ("aett-mongodb CommitStore.commit (1 event)", aett[0])
            for key, (_, op) in rows.items():  # warm-up: connections, caches
                if key not in ("exact", "read", "save", "aett"):
                    await op(0, 0)
            laps: dict[str, list[float]] = {key: [] for key in rows}
            keys = list(rows)
            step = 0
            for r in range(1, rounds + 1):
                for i in range(STREAMS):
                    step += 1
                    for key in keys[step % len(keys) :] + keys[: step % len(keys)]:
                        if key == "read":  # outside the lap: only the append is timed
                            async for _ in store.read_stream("account", f"x{i}", from_version=r):
                                pass
                        started = time.perf_counter()
                        await rows[key][1](r, i)
                        laps[key].append(time.perf_counter() - started)
            if aett is not None:
                aett[1]()
    load = os.getloadavg()[0]
    results = {k: Timing(rows[k][0], laps[k], len(laps[k]), sum(laps[k])) for k in rows}
    base = results["raw"].rate
    print_table(
        f"One writer, {rounds} x {STREAMS} streams, interleaved",
        ["operation", "events/s", "p50 ms", "p99 ms", "vs raw", "p50 vs raw"],
        [
            (
                t.label,
                f"{t.rate:,.0f}",
                f"{t.p50_ms:.2f}",
                f"{t.p99_ms:.2f}",
                f"{t.rate / base:.2f}x",
                f"{results['raw'].p50_ms / t.p50_ms:.2f}x",
            )
            for t in results.values()
        ],
    )
    parts = [f"{k} {results[k].rate / base:.2f}x" for k in ("new", "exact", "read", "save")]
    if "aett" in results:
        parts.append(f"save/aett {results['save'].rate / results['aett'].rate:.2f}x")
    console.print(f"load average {load:.1f}; rate vs raw: " + ", ".join(parts))
    medians = [f"{k} {results['raw'].p50_ms / results[k].p50_ms:.2f}x" for k in results]
    console.print("p50 latency, raw's / the row's: " + ", ".join(medians))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    asyncio.run(main(parser.parse_args().quick))
