"""Costs as the log grows: fill to 10k, 100k and 1M events over 100,000 streams, measure at each.

    python benchmarks/bench_scale.py [--home DIR] [--stops 10000 100000 1000000]

Not a test: filling 1,000,000 events takes a long while on the embedded server. The fill is
resumable: the server's files live under `--home` (default ~/.esmongo-bench-scale; or
MONGODB_URI), each filled event has a stable id, so a fill stopped anywhere goes on from
where it got to (a batch written but not noted is recorded once: the store answers a
retried event id with its first recording). Measurements of a stop already passed are kept
in the database and printed again.

Event k (from 0) goes to stream `s{k % 100000}` at version `k // 100000 + 1`: at 1M stored,
every stream has 10 events. At each stop:
- append: 300 sequential exact-version appends of 1 event to 100 streams of their own;
- read_stream: 300 reads of random filled streams (p50/p99);
- aggregate load: 300 `Repository.load`s of random streams, no cache, no snapshot;
- read_all page: 100 pages of 1,000 events from random positions;
- catch-up: a projection counting events per stream, from its checkpoint at the head
  minus 10,000 (one document per stream: inserts and merged updates);
- service RSS: `esmongo serve` (with its projection daemon) after 200 HTTP commands.
Issue 14's targets: at 1M, append >= 0.8x its 10k rate, read_stream p99 and aggregate load
within 1.5x of their 10k figures, service RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).parent))

from bench_http import start_service, wait_ready
from common import console, percentile, print_table
from esmongo import NO_STREAM, Aggregate, AppendRequest, EventStore, NewEvent, Repository, applies
from esmongo.api import ApiKeys, Role
from esmongo.bank import Bank
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer, free_port
from esmongo.events import RecordedEvent
from esmongo.model import EventLike
from esmongo.projections import (
    Checkpoints,
    Projection,
    ProjectionRunner,
    RunnerOptions,
    Update,
    handles,
)

STREAMS = 100_000
DB = "bench_scale"
META = "bench_scale_meta"


class Probe(Aggregate):
    aggregate_type = "scale"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    @applies("scale.filled")
    def _filled(self, event: EventLike) -> None:
        self.total += int(event.data["n"])


class PerStream(Projection):
    """Events per stream: one upserted document per stream."""

    name = "scale_per_stream"
    collections = {"scale_per_stream": []}

    @handles("scale.filled")
    def filled(self, event: RecordedEvent) -> Update:
        return Update("scale_per_stream", {"_id": event.aggregate_id}, inc={"events": 1})


@contextlib.contextmanager
def server(home: Path) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    home.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(home) as embedded:
        yield embedded.uri


@contextlib.asynccontextmanager
async def database(uri: str) -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        yield client.get_database(DB, codec_options=CODEC_OPTIONS)
    finally:
        await client.close()


async def fill(store: EventStore, db: AsyncDatabase[Document], upto: int) -> None:
    meta = db[META]
    doc = await meta.find_one({"_id": "fill"})
    done = int(doc["filled"]) if doc else 0
    started, first = time.perf_counter(), done
    while done < upto:
        batch = range(done, min(upto, done + 500))
        requests = [
            AppendRequest(
                "scale",
                f"s{k % STREAMS}",
                [NewEvent("scale.filled", {"n": 1, "k": k}, event_id=f"fill-{k}")],
                k // STREAMS or NO_STREAM,
            )
            for k in batch
        ]
        await store.append_streams(requests)
        done = batch[-1] + 1
        await meta.update_one({"_id": "fill"}, {"$set": {"filled": done}}, upsert=True)
        if done % 20_000 == 0:
            rate = (done - first) / (time.perf_counter() - started)
            console.print(f"filled {done:,} ({rate:,.0f} events/s)")


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "per_s": len(samples) / sum(samples) if samples else 0.0,
    }


async def timed(samples: list[float], work: Any) -> None:
    started = time.perf_counter()
    await work
    samples.append(time.perf_counter() - started)


async def drain(events: AsyncIterator[RecordedEvent]) -> None:
    async for _ in events:
        pass


async def measure(store: EventStore, db: AsyncDatabase[Document], stop: int) -> dict[str, Any]:
    rng = random.Random(stop)
    filled = min(stop, STREAMS)
    appends: list[float] = []
    tag = f"p{stop}-{time.time_ns()}"  # a measurement may be run again after a failure
    for i in range(100):
        await store.append("probe", f"{tag}-{i}", [NewEvent("probe.x", {})], NO_STREAM)
    for r in range(1, 4):
        for i in range(100):
            await timed(appends, store.append("probe", f"{tag}-{i}", [NewEvent("probe.x", {})], r))
    reads: list[float] = []
    for _ in range(300):
        await timed(reads, drain(store.read_stream("scale", f"s{rng.randrange(filled)}")))
    repo = Repository(store, Probe)
    loads: list[float] = []
    for _ in range(300):
        await timed(loads, repo.load(f"s{rng.randrange(filled)}"))
    pages: list[float] = []
    for _ in range(100):
        after = rng.randrange(max(1, stop - 1000))
        await timed(pages, drain(store.read_all(after_sequence=after, limit=1000)))
    catch_up = await catch_up_rate(store, db, stop)
    return {
        "append": stats(appends),
        "read_stream": stats(reads),
        "load": stats(loads),
        "read_all_page": stats(pages),
        "catch_up_per_s": catch_up,
    }


async def catch_up_rate(store: EventStore, db: AsyncDatabase[Document], stop: int) -> float:
    """A projection's catch-up over the last 10,000 events (its checkpoint set just before)."""
    await db.drop_collection("scale_per_stream")
    checkpoints = Checkpoints(db)
    await checkpoints.delete(PerStream.name)
    head = await store.head_sequence()
    start = max(0, head - 10_000)
    runner = ProjectionRunner(store, PerStream(), RunnerOptions(batch_size=1000))
    await runner.init()
    await checkpoints.collection.update_one(
        {"_id": PerStream.name}, {"$set": {"position": start}}, upsert=True
    )
    started = time.perf_counter()
    await runner.catch_up()
    return (head - start) / (time.perf_counter() - started)


async def service_rss(uri: str) -> float:
    """Resident MB of `esmongo serve` after 200 HTTP commands."""
    async with database(uri) as db:
        await Bank(db).init()
        keys = ApiKeys(db)
        await keys.init()
        key = await keys.create(Role.TELLER, "scale")
    port = free_port()
    service = start_service(uri, DB, port, projections=True)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base)
        headers = {"Authorization": f"Bearer {key}"}
        tag = f"{time.time_ns()}"
        # A service starting on a large log reads it once in the background (the check of
        # stored event versions): its first requests may wait on that.
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            for c in range(20):
                body = {"accountId": f"rss{tag}-{c}", "currency": "EUR"}
                assert (await http.post("/accounts", json=body)).status_code == 201
                await http.post(f"/accounts/rss{tag}-{c}/activate")
                for _ in range(9):
                    r = await http.post(f"/accounts/rss{tag}-{c}/credit", json={"amount": "1"})
                    assert r.status_code == 200, r.text
        status = await asyncio.to_thread(Path(f"/proc/{service.pid}/status").read_text)
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024
    finally:
        service.terminate()
        service.wait(timeout=30)


async def main(home: Path, stops: list[int]) -> None:
    with server(home) as uri:
        async with database(uri) as db:
            store = EventStore(db)
            await store.init()
            for stop in stops:
                known = await db[META].find_one({"_id": f"at{stop}"})
                if known is None:
                    await fill(store, db, stop)
                    figures = await measure(store, db, stop)
                    await db[META].insert_one({"_id": f"at{stop}", **figures})
                    known = {"_id": f"at{stop}", **figures}
                if "rss_mb" not in known:
                    known["rss_mb"] = await service_rss(uri)
                    await db[META].update_one(
                        {"_id": f"at{stop}"}, {"$set": {"rss_mb": known["rss_mb"]}}
                    )
                report(stop, known)


def report(stop: int, f: dict[str, Any]) -> None:
    rows = [
        ("append(1), exact", f"{f['append']['per_s']:,.0f}/s", f"{f['append']['p99_ms']:.1f}"),
        (
            "read_stream",
            f"{f['read_stream']['p50_ms']:.2f} ms",
            f"{f['read_stream']['p99_ms']:.1f}",
        ),
        ("aggregate load", f"{f['load']['p50_ms']:.2f} ms", f"{f['load']['p99_ms']:.1f}"),
        (
            "read_all page of 1,000",
            f"{f['read_all_page']['p50_ms']:.1f} ms",
            f"{f['read_all_page']['p99_ms']:.1f}",
        ),
        ("catch-up (last 10,000 events)", f"{f['catch_up_per_s']:,.0f} events/s", ""),
        ("service RSS", f"{f['rss_mb']:.0f} MB", ""),
    ]
    print_table(f"At {stop:,} events stored", ["measure", "rate or p50", "p99 ms"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path.home() / ".esmongo-bench-scale")
    parser.add_argument("--stops", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    asyncio.run(main(args.home, sorted(args.stops)))
