"""Append throughput and latency under concurrency: raw PyMongo vs esmongo with and without
group commit, on one server, in one run.

    python benchmarks/bench_append_concurrency.py [--quick] [--seconds S]
        [--writers 1,8,64,200] [--processes 1,2,4] [--no-processes]

Each writer is an asyncio task that owns one stream and appends 1 event per call, with the
exact expected version (NO_STREAM for its first): what an aggregate does. Writers never
share a stream, so nothing conflicts on versions; they only contend for the server and the
global sequence counter. Three variants:
- raw: PyMongo, one transaction per append (`with_transaction`): `$inc` the counter,
  `insert_one`. It checks no version (the unique index still guards it), so it does less
  than an event store must: the ratios against it are conservative.
- esmongo: `EventStore(group_commit=False)`, one transaction per append.
- esmongo+gc: `EventStore(group_commit=True)`, concurrent appends share transactions.
Then the same with several processes, each with 8 writers, all on one database.

Targets (issue 6): group commit at 8 and 64 writers >= 3x raw at the same concurrency; at
no concurrency below its own single-writer rate; its single-writer p50 within 10% of
esmongo without group commit. Machines are shared and noisy: read the ratios.
With MONGODB_URI set, runs against that server; else starts an embedded one in a temp dir.
Takes about 4.5 minutes (--quick: about 2). The 1-writer latency target is judged on one
writer alternating appends with and without group commit, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

sys.path.insert(0, str(Path(__file__).parent))

from common import console, percentile, print_table
from esmongo import NO_STREAM, NewEvent
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer
from esmongo.events import utc_now
from esmongo.store import EventStore
from esmongo.store.transactions import SEQUENCE_COUNTER

DURABLE = WriteConcern("majority", j=True)
VARIANTS = ("raw", "esmongo", "esmongo+gc")
EVENT_TYPE = "account.credited"


def credit(n: int) -> dict[str, Any]:
    return {"amount": Decimal("1.00"), "currency": "EUR", "transactionId": f"t{n}"}


@dataclass
class Result:
    """Appends completed inside the measuring window, and their latencies."""

    appends: int = 0
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.appends / self.window if self.window else 0.0

    def merge(self, other: Result) -> None:
        self.appends += other.appends
        self.window = max(self.window, other.window)
        self.latencies += other.latencies
        for key, value in other.stats.items():
            self.stats[key] = self.stats.get(key, 0) + value


class RawWriter:
    """One append per transaction, written with PyMongo directly (the baseline)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.client = db.client
        self.events = db.get_collection("events", write_concern=DURABLE)
        self.counters = db.get_collection("counters", write_concern=DURABLE)

    async def append(self, stream: str, version: int) -> None:
        async def write(session: AsyncClientSession) -> None:
            counter = await self.counters.find_one_and_update(
                {"_id": SEQUENCE_COUNTER},
                {"$inc": {"value": 1}},
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            assert counter is not None
            sequence, now = counter["value"], utc_now()
            doc = {
                "_id": sequence,
                "eventId": uuid.uuid4().hex,
                "eventType": EVENT_TYPE,
                "eventVersion": "1.0",
                "aggregateType": "account",
                "aggregateId": stream,
                "aggregateVersion": version,
                "data": credit(version),
                "metadata": {"timestamp": now},
                "timestamp": now,
                "sequence": sequence,
            }
            await self.events.insert_one(doc, session=session)

        async with self.client.start_session() as session:
            await session.with_transaction(
                write, read_concern=ReadConcern("snapshot"), write_concern=DURABLE
            )


async def run_writers(
    db: AsyncDatabase[Document],
    variant: str,
    writers: int,
    prefix: str,
    start: float,
    warmup: float,
    seconds: float,
) -> Result:
    """`writers` tasks append from wall-clock `start`; appends that finish in the window count."""
    store = EventStore(db, group_commit=variant == "esmongo+gc")
    raw = RawWriter(db) if variant == "raw" else None
    measure_from = start + warmup
    measure_to = measure_from + seconds
    result = Result(window=seconds)

    async def writer(i: int) -> None:
        stream = f"{prefix}w{i}"
        version = 0
        while time.time() < measure_to:
            version += 1
            began = time.perf_counter()
            if raw is not None:
                await raw.append(stream, version)
            else:
                event = NewEvent(EVENT_TYPE, credit(version))
                await store.append("account", stream, [event], version - 1 or NO_STREAM)
            if measure_from <= time.time() <= measure_to:
                result.appends += 1
                result.latencies.append(time.perf_counter() - began)

    await asyncio.sleep(max(0.0, start - time.time()))
    await asyncio.gather(*(writer(i) for i in range(writers)))
    result.stats = {
        "transactions": store.stats.transactions,
        "appends": store.stats.appends,
        "retries": store.stats.retries,
    }
    return result


async def paired_latency(uri: str, appends: int) -> tuple[list[float], list[float]]:
    """One writer alternating appends through a store with and one without group commit.

    Alternating, so that a noisy neighbour slows both alike: the fair way to compare a
    lone writer's latency on a shared machine.
    """
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    name = f"bench_pair_{uuid.uuid4().hex[:8]}"
    try:
        db = await fresh_db(client, name)
        stores = {group: EventStore(db, group_commit=group) for group in (True, False)}
        latencies: dict[bool, list[float]] = {True: [], False: []}
        for version in range(1, appends + 21):
            order = (True, False) if version % 2 else (False, True)
            for group in order:
                event = NewEvent(EVENT_TYPE, credit(version))
                began = time.perf_counter()
                await stores[group].append(
                    "account", f"pair{group}", [event], version - 1 or NO_STREAM
                )
                if version > 20:  # the first ones warm the connections up
                    latencies[group].append(time.perf_counter() - began)
        return latencies[True], latencies[False]
    finally:
        await client.drop_database(name)
        await client.close()


async def fresh_db(client: AsyncMongoClient[Document], name: str) -> AsyncDatabase[Document]:
    await client.drop_database(name)
    db = client.get_database(name, codec_options=CODEC_OPTIONS)
    await EventStore(db).init()
    return db


async def in_process(uri: str, variant: str, writers: int, warmup: float, seconds: float) -> Result:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, maxPoolSize=max(100, writers))
    name = f"bench_conc_{uuid.uuid4().hex[:8]}"
    try:
        db = await fresh_db(client, name)
        await db.command("ping")
        return await run_writers(db, variant, writers, "", time.time(), warmup, seconds)
    finally:
        await client.drop_database(name)
        await client.close()


async def worker_main(spec: dict[str, Any]) -> None:
    """A child process of the multi-process run: prints its Result as JSON."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(spec["uri"])
    try:
        db = client.get_database(spec["db"], codec_options=CODEC_OPTIONS)
        await db.command("ping")
        result = await run_writers(
            db,
            spec["variant"],
            spec["writers"],
            spec["prefix"],
            spec["start"],
            spec["warmup"],
            spec["seconds"],
        )
    finally:
        await client.close()
    print(json.dumps(result.__dict__))


def multi_process(
    uri: str, variant: str, processes: int, writers: int, warmup: float, seconds: float
) -> Result:
    """`processes` children with `writers` writers each, on one database, started together."""
    name = f"bench_mp_{uuid.uuid4().hex[:8]}"

    async def setup(drop: bool) -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
        try:
            if drop:
                await client.drop_database(name)
            else:
                await fresh_db(client, name)
        finally:
            await client.close()

    asyncio.run(setup(drop=False))
    start = time.time() + 2.0 + 0.5 * processes  # every child is connected by then
    children = []
    for p in range(processes):
        spec = {
            "uri": uri,
            "db": name,
            "variant": variant,
            "writers": writers,
            "prefix": f"p{p}",
            "start": start,
            "warmup": warmup,
            "seconds": seconds,
        }
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    total = Result(window=seconds)
    try:
        for child in children:
            out, _ = child.communicate(timeout=120 + seconds)
            if child.returncode != 0:
                raise RuntimeError(f"a benchmark worker failed (exit {child.returncode})")
            total.merge(Result(**json.loads(out.strip().splitlines()[-1])))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        asyncio.run(setup(drop=True))
    return total


@contextlib.contextmanager
def server() -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="esmongo-bench-") as home, EmbeddedServer(home) as s:
        yield s.uri


def row(label: str, r: Result, raw: Result | None, extra: str = "") -> tuple[str, ...]:
    ratio = f"{r.rate / raw.rate:.2f}x" if raw is not None and raw.rate else "-"
    txns = r.stats.get("transactions", 0)
    per_txn = f"{r.stats.get('appends', 0) / txns:.1f}" if txns else "1"
    retries = r.stats.get("retries")
    return (
        label,
        f"{r.rate:,.0f}",
        f"{percentile(r.latencies, 50) * 1000:.1f}",
        f"{percentile(r.latencies, 99) * 1000:.1f}",
        ratio,
        per_txn,
        "-" if retries is None else str(retries),
        extra,
    )


COLUMNS = ["variant", "events/s", "p50 ms", "p99 ms", "vs raw", "appends/txn", "retries", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (2 s)")
    parser.add_argument("--seconds", type=float, help="measuring window per cell")
    parser.add_argument("--writers", default="1,8,64,200")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--no-processes", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(json.loads(args.worker)))
        return
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    warmup = 0.5 if args.quick else 1.0
    writer_counts = [int(w) for w in args.writers.split(",")]
    process_counts = [] if args.no_processes else [int(p) for p in args.processes.split(",")]

    console.width = max(console.width, 132)  # the tables, unwrapped, also in a log file
    with server() as uri:
        results: dict[tuple[str, int], Result] = {}
        for writers in writer_counts:
            for variant in VARIANTS:  # interleaved, so drift on a shared machine hits all
                console.print(f"[dim]{writers} writers, {variant}...[/dim]")
                results[variant, writers] = asyncio.run(
                    in_process(uri, variant, writers, warmup, seconds)
                )
        console.print("[dim]1 writer, alternating with and without group commit...[/dim]")
        paired = asyncio.run(paired_latency(uri, 200 if args.quick else 500))
        mp: dict[tuple[str, int], Result] = {}
        for processes in process_counts:
            for variant in VARIANTS:
                console.print(f"[dim]{processes} processes x 8 writers, {variant}...[/dim]")
                mp[variant, processes] = multi_process(uri, variant, processes, 8, warmup, seconds)

    rows = []
    single = results.get(("esmongo+gc", writer_counts[0]))
    for writers in writer_counts:
        raw = results["raw", writers]
        for variant in VARIANTS:
            r = results[variant, writers]
            extra = ""
            if variant == "esmongo+gc" and single is not None and single.rate:
                extra = f"{r.rate / single.rate:.2f}x its 1-writer rate"
            rows.append(row(f"{writers:>3} writers  {variant}", r, raw, extra))
    print_table(
        f"One process, 1 event per append, distinct streams ({seconds:.0f} s per cell)",
        COLUMNS,
        rows,
    )
    if mp:
        mp_rows = []
        for processes in process_counts:
            raw = mp["raw", processes]
            for variant in VARIANTS:
                mp_rows.append(row(f"{processes} proc x 8  {variant}", mp[variant, processes], raw))
        print_table("Several processes, 8 writers each, one database", COLUMNS, mp_rows)

    console.print("[bold]Targets[/bold]")
    for writers in (8, 64):
        if ("raw", writers) in results:
            ratio = results["esmongo+gc", writers].rate / results["raw", writers].rate
            console.print(f"  group commit at {writers} writers: {ratio:.2f}x raw (target >= 3)")
    if single is not None:
        worst = min(results["esmongo+gc", w].rate for w in writer_counts) / single.rate
        console.print(f"  group commit, lowest rate / 1-writer rate: {worst:.2f} (target >= 1)")
    with_gc, without = (percentile(p, 50) for p in paired)
    console.print(
        f"  1 writer p50, appends alternating: {with_gc * 1000:.2f} ms with group commit, "
        f"{without * 1000:.2f} ms without: {with_gc / without:.2f}x (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
