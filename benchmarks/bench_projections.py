"""Projection throughput and latency, against raw PyMongo on the same server in the same run.

    python benchmarks/bench_projections.py [--events 20000] [--live-seconds 15] [--rates 50 100 200]
        [--rebuild-rounds 1] [--capacity-seconds 5] [--batch-size 500] [--catch-up-batch N]

1. Catch-up: the three bank read models (accounts_read, transactions_read,
   analytics_hourly) built from sequence 0 over N events, in one process as the daemon
   runs them, vs raw `insert_many` (batches of 1,000) of the same N event documents into
   an empty collection. Target: catch-up events/s >= 0.5x raw docs/s. The floor: the read
   models' final documents inserted with `insert_many` into collections with their indexes.
2. Live lag: the daemon running, appends fired on a clock (4 events every 20 ms at 200
   events/s, whether or not the previous append has returned, as independent clients
   would), at 200 events/s (the target) and at lower rates; for each event, the time
   from the return of its append to the commit of the batch that put it in each read
   model. Target (issue 14): p99 <= 50 ms at 100 events/s.
3. Rebuild (blue/green) of each read model, with its indexes created before the fill and
   with its non-unique ones built after it (`defer_indexes`), alternating: the fill and
   the index build timed apart (`--rebuild-rounds 0` skips it).
4. Capacity: appends of 4 events by 1 and by 8 tasks back to back, no projections
   running: what the server takes, next to the live rates (`--capacity-seconds 0` skips).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).parent))

from common import benchmark_server, console, database, percentile, print_table
from esmongo import AppendRequest, EventStore, NewEvent, RecordedEvent
from esmongo.bank import bank_projections
from esmongo.codec import Document
from esmongo.projections import (
    BatchReport,
    ProjectionDaemon,
    ProjectionRunner,
    RunnerOptions,
    rebuild,
)
from esmongo.projections.source import SharedSource
from esmongo.store import archive as archive_module

CENT = Decimal("0.01")


class Load:
    """Valid account events: accounts created then credited and debited at random."""

    def __init__(self, store: EventStore, accounts: int, seed: int = 1) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.ids = [f"acc_{i:05d}" for i in range(accounts)]
        self.balances: dict[str, Decimal] = {}
        self.currency = {a: self.rng.choice(("USD", "EUR", "GBP")) for a in self.ids}
        self.txn = 0
        self.busy: set[str] = set()

    def _request(self, account: str) -> AppendRequest:
        if account not in self.balances:
            self.balances[account] = Decimal("0.00")
            data = {
                "ownerId": f"u{account}",
                "ownerName": account,
                "currency": self.currency[account],
            }
            events = [NewEvent("account.created", data), NewEvent("account.activated", {})]
            return AppendRequest("account", account, events)
        amount = (Decimal(self.rng.randint(100, 50_000)) / 100).quantize(CENT)
        credit = self.balances[account] < amount or self.rng.random() < 0.6
        self.balances[account] += amount if credit else -amount
        self.txn += 1
        data = {
            "amount": amount,
            "currency": self.currency[account],
            "transactionId": f"t{self.txn}",
            "reason": None,
            "balanceAfter": self.balances[account],
        }
        kind = "account.credited" if credit else "account.debited"
        return AppendRequest("account", account, [NewEvent(kind, data)])

    async def append(self, streams: int) -> list[RecordedEvent]:
        idle = [a for a in self.ids if a not in self.busy]
        chosen = self.rng.sample(idle, min(streams, len(idle)))
        self.busy.update(chosen)  # one append in flight per account: balances stay in order
        try:
            written = await self.store.append_streams([self._request(a) for a in chosen])
        finally:
            self.busy.difference_update(chosen)
        return [event for stream in written for event in stream]


async def raw_insert_rate(db: AsyncDatabase[Document], docs: list[Document]) -> float:
    raw = db["raw_insert_many"]
    await raw.drop()
    started = time.perf_counter()
    for i in range(0, len(docs), 1000):
        await raw.insert_many(docs[i : i + 1000], ordered=True)
    elapsed = time.perf_counter() - started
    await raw.drop()
    return len(docs) / elapsed


async def catch_up(
    store: EventStore, batch_size: int, catch_up_batch: int | None
) -> tuple[float, int]:
    """The three read models from zero, as a daemon runs them (a shared read, live batches
    of `batch_size`, catch-up batches of the runner's default or `catch_up_batch`)."""
    options = RunnerOptions(batch_size=batch_size, catch_up_batch_size=catch_up_batch)
    source = SharedSource(store, fetch_size=batch_size, capacity=options.catch_up_size)
    runners = [ProjectionRunner(store, p, options, source=source) for p in bank_projections()]
    for runner in runners:
        await runner.init()
    started = time.perf_counter()
    await asyncio.gather(*(runner.catch_up() for runner in runners))
    return time.perf_counter() - started, source.fetches


async def floor_seconds(db: AsyncDatabase[Document]) -> tuple[float, int]:
    """Seconds to `insert_many` the read models' final documents (as the catch-up left
    them) into empty collections with the same indexes: what the server itself costs for
    the documents a catch-up must at least write, whatever the client does."""
    elapsed, count = 0.0, 0
    for projection in bank_projections():
        for name, indexes in projection.collections.items():
            docs = [doc async for doc in db[name].find({})]
            floor = db[f"floor_{name}"]
            await floor.drop()
            await db.create_collection(floor.name)
            if indexes:
                await floor.create_indexes(indexes)
            started = time.perf_counter()
            for i in range(0, len(docs), 1000):
                await floor.insert_many(docs[i : i + 1000], ordered=True)
            elapsed += time.perf_counter() - started
            count += len(docs)
            await floor.drop()
    return elapsed, count


async def rebuild_rows(store: EventStore, rounds: int, batch_size: int) -> list[list[str]]:
    """Each read model rebuilt with indexes first, then deferred, `rounds` times."""
    rows: list[list[str]] = []
    for round_ in range(rounds):
        for defer in (False, True):
            for projection in bank_projections():
                result = await rebuild(
                    store, projection, batch_size=batch_size, defer_indexes=defer
                )
                fill = result.duration_s - result.index_build_s - result.swap_s
                rows.append(
                    [
                        str(round_ + 1),
                        projection.name,
                        "after fill" if defer else "first",
                        f"{fill:.2f}",
                        f"{result.index_build_s:.2f}",
                        f"{result.swap_s:.2f}",
                        f"{result.duration_s:.2f}",
                        f"{result.events / result.duration_s:,.0f}",
                    ]
                )
    return rows


async def capacity(store: EventStore, load: Load, seconds: float, tasks: int = 8) -> float:
    """Events/s appended by `tasks` writers of 4-event appends back to back.

    Each writer counts its own: `total += len(await ...)` on a shared total reads the total
    before the await, so concurrent writers overwrite each other's counts (this function
    did, and reported 81 events/s at 16 tasks where 1,400/s were appended). The count is
    checked against the log's head."""
    deadline = time.monotonic() + seconds
    before = await store.head_sequence()

    async def writer() -> int:
        mine = 0
        while time.monotonic() < deadline:
            mine += len(await load.append(4))
        return mine

    started = time.monotonic()
    appended = sum(await asyncio.gather(*(writer() for _ in range(tasks))))
    elapsed = time.monotonic() - started
    if (grown := await store.head_sequence() - before) != appended:
        raise RuntimeError(f"capacity counted {appended} events, the log grew by {grown}")
    return appended / elapsed


@dataclass
class LiveRun:
    rate: float
    achieved: float
    append_ms: list[float]
    lags: dict[str, list[float]]
    archive_reads: tuple[int, int] | None = None
    """(made, left out) by the store's merged reads while measuring (None: not counted)."""


async def live_lag(store: EventStore, load: Load, seconds: float, rate: float) -> LiveRun:
    """Lag of each event into each read model, from the return of its append."""
    committed: dict[tuple[str, int], float] = {}
    measuring = False

    def on_batch(report: BatchReport) -> None:
        if measuring:
            for event in report.events:
                committed[(report.projection, event.sequence)] = report.committed_at

    daemon = ProjectionDaemon(
        store, bank_projections(), RunnerOptions(batch_size=500, on_batch=on_batch, lease_ttl_s=10)
    )
    daemon.start()
    await daemon.wait_until(await store.head_sequence(), timeout_s=600)
    measuring = True
    counts = getattr(archive_module, "ARCHIVE_READS", None)  # absent before the skip
    counted = dict(counts) if counts is not None else None
    acked: dict[int, float] = {}
    append_ms: list[float] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one(streams: int) -> None:
        sent = time.perf_counter()
        written = await load.append(streams)
        append_ms.append((time.perf_counter() - sent) * 1000)
        now = time.time()
        acked.update((e.sequence, now) for e in written)

    per_tick = 4
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        task = asyncio.create_task(one(per_tick))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        ticks += 1
        await asyncio.sleep(max(0.0, started + ticks * per_tick / rate - time.monotonic()))
    await asyncio.gather(*in_flight)
    elapsed = time.monotonic() - started
    await daemon.wait_until(await store.head_sequence(), timeout_s=120)
    await daemon.stop()
    archive_reads = None
    if counts is not None and counted is not None:
        archive_reads = (
            counts["read"] - counted["read"],
            counts["skipped"] - counted["skipped"],
        )
    lags: dict[str, list[float]] = {}
    for (projection, sequence), at in committed.items():
        if sequence in acked:
            # A read model can commit before the writer has read its append's reply: 0 then.
            lags.setdefault(projection, []).append(max(0.0, at - acked[sequence]))
    return LiveRun(rate, len(acked) / elapsed, append_ms, lags, archive_reads)


async def main(
    events: int,
    live_seconds: float,
    batch_size: int,
    catch_up_batch: int | None,
    rates: list[float],
    rebuild_rounds: int,
    capacity_seconds: float,
) -> None:
    with benchmark_server() as uri:
        async with database(uri, "bench_projections") as db:
            store = EventStore(db)
            await store.init()
            load = Load(store, accounts=500)
            console.print(f"appending {events} events...")
            while (await store.head_sequence()) < events:
                await load.append(100)
            total = await store.head_sequence()
            docs = [doc async for doc in store.events.find({}).sort("sequence", 1)]
            for doc in docs:
                doc["_id"] = f"raw{doc['_id']}"
            raw_rate = await raw_insert_rate(db, docs)
            elapsed, fetches = await catch_up(store, batch_size, catch_up_batch)
            rate = total / elapsed
            floor_s, floor_docs = await floor_seconds(db)
            print_table(
                f"Catch-up of 3 bank projections over {total} events (live batch {batch_size}, "
                f"catch-up batch {catch_up_batch or 'default'})",
                ["measure", "value"],
                [
                    ["raw insert_many (1,000/batch)", f"{raw_rate:,.0f} docs/s"],
                    ["catch-up, all three read models", f"{rate:,.0f} events/s ({elapsed:.1f}s)"],
                    ["ratio (target >= 0.5x)", f"{rate / raw_rate:.2f}x"],
                    [
                        "floor: insert_many of the read models' final documents, same indexes",
                        f"{floor_docs:,} docs in {floor_s:.2f}s ({floor_docs / floor_s:,.0f}/s)",
                    ],
                    [
                        "catch-up time over the floor's",
                        f"{elapsed / floor_s:.1f}x",
                    ],
                    ["event reads (shared by the three)", f"{fetches}"],
                ],
            )
            if rebuild_rounds:
                print_table(
                    f"Blue/green rebuild of each read model over {total} events",
                    [
                        "round",
                        "read model",
                        "secondary indexes",
                        "fill s",
                        "index build s",
                        "swap s",
                        "total s",
                        "events/s",
                    ],
                    await rebuild_rows(store, rebuild_rounds, batch_size),
                )
            if capacity_seconds:
                for tasks in (1, 8):
                    most = await capacity(store, load, capacity_seconds, tasks)
                    console.print(
                        f"capacity: {most:,.0f} events/s appended by {tasks} task(s), 4 events "
                        "an append, back to back, no projections"
                    )
            runs = [await live_lag(store, load, live_seconds, rate) for rate in rates]
            if not runs:
                return
            rows: list[list[str]] = []
            for run in runs:
                every = [lag for samples in run.lags.values() for lag in samples]
                rows.append(
                    [
                        f"{run.rate:.0f}",
                        f"{run.achieved:.0f}",
                        f"{percentile(run.append_ms, 50):.1f}",
                        *row(every),
                        "n/a" if run.archive_reads is None else "%s / %s" % run.archive_reads,  # noqa: UP031
                    ]
                )
            print_table(
                "Live lag, append -> all three read models (target p99 <= 50 ms at 100/s)",
                [
                    "offered ev/s",
                    "appended ev/s",
                    "append p50 ms",
                    "lag p50 ms",
                    "p99 ms",
                    "max",
                    "archive reads made / left out",
                ],
                rows,
            )


def row(samples: list[float]) -> list[str]:
    ms: Any = [s * 1000 for s in samples]
    return [f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}", f"{max(ms, default=0):.1f}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--live-seconds", type=float, default=15.0)
    parser.add_argument("--batch-size", type=int, default=500, help="live batch (the daemon's)")
    parser.add_argument("--catch-up-batch", type=int, help="default: RunnerOptions'")
    parser.add_argument("--rates", type=float, nargs="*", default=[50, 100, 200])
    parser.add_argument("--rebuild-rounds", type=int, default=1)
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(
        main(
            args.events,
            args.live_seconds,
            args.batch_size,
            args.catch_up_batch,
            args.rates,
            args.rebuild_rounds,
            args.capacity_seconds,
        )
    )
