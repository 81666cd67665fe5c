"""`esmongo check` on a store of N events: time, events/s, and the Python heap's peak
(tracemalloc) during the check, at two sizes: a streaming check's peak does not grow with
the number of events. Also how the server runs the two passes' queries (explain).

Run: .venv/bin/python benchmarks/bench_check.py [N ...] (embedded server, or MONGODB_URI).
"""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import benchmark_server, console, database
from esmongo import AppendRequest, EventStore, NewEvent
from esmongo.ops.check import check

STREAM_EVENTS = 10
STREAMS_PER_BATCH = 50
ARCHIVED = 50


async def fill(store: EventStore, events: int) -> None:
    streams = events // STREAM_EVENTS
    for first in range(0, streams, STREAMS_PER_BATCH):
        for round_ in range(STREAM_EVENTS):
            requests = [
                AppendRequest("account", f"a{s:07d}", [NewEvent("x.moved", {"n": round_})])
                for s in range(first, min(first + STREAMS_PER_BATCH, streams))
            ]
            await store.append_streams(requests)
    for s in range(ARCHIVED):
        await store.archive_stream("account", f"a{s * 7:07d}")


async def plan(store: EventStore) -> None:
    sort = {"aggregateType": 1, "aggregateId": 1, "aggregateVersion": 1}
    for name, query in (("sequence", {"sequence": 1}), ("streams", sort)):
        explained = await store.db.command(
            "explain", {"find": store.events.name, "filter": {}, "sort": query}
        )
        winning = explained.get("queryPlanner", {}).get("winningPlan", {})
        console.print(f"  {name} pass plan: {str(winning)[:160]}")


async def measure(uri: str, events: int) -> None:
    async with database(uri, f"bench_check_{events}") as db:
        store = EventStore(db)
        await store.init()
        started = time.perf_counter()
        await fill(store, events)
        console.print(f"{events} events written in {time.perf_counter() - started:.1f} s")
        await plan(store)
        tracemalloc.start()
        report = await check(db)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.ok, [f.line() for f in report.findings]
        console.print(
            f"  check: {report.events} events, {report.streams} streams in "
            f"{report.elapsed_s:.2f} s ({report.events / report.elapsed_s:,.0f} events/s), "
            f"heap peak {peak / 1e6:.1f} MB"
        )


async def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [5_000, 20_000]
    with benchmark_server() as uri:
        for events in sizes:
            await measure(uri, events)


if __name__ == "__main__":
    asyncio.run(main())
