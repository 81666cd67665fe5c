"""Archiving: how long archive_stream takes, and what the archive costs reads.

- archive_stream of a 1,000-event stream (one transaction: read, insert, delete, record);
- read_all over 5,000 events, whole and in pages of 100 (a projection's reads), with an
  empty archive, against the single-collection read it replaced (one find, decode);
- read_stream of a 1,000-event stream: active, and archived (one empty find more);
- Repository-style read of a stream with nothing newer (the snapshot is current): the
  archive is asked too, so two finds instead of one.

Run: .venv/bin/python benchmarks/bench_archive.py (embedded server, or MONGODB_URI).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pymongo import ASCENDING

sys.path.insert(0, str(Path(__file__).parent))

from common import benchmark_server, console, database
from esmongo import EventStore, NewEvent, RecordedEvent

STREAM_EVENTS = 1_000
OTHER_EVENTS = 4_000
REPEAT = 5


async def timed(work: Callable[[], Awaitable[object]], repeat: int = REPEAT) -> float:
    """Median seconds of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


async def fill(store: EventStore, stream: str) -> None:
    for _ in range(STREAM_EVENTS // 100):
        await store.append("account", stream, [NewEvent("x.moved", {"n": i}) for i in range(100)])


async def main() -> None:
    with benchmark_server() as uri:
        async with database(uri, "bench_archive") as db:
            store = EventStore(db)
            await store.init()
            for n in range(OTHER_EVENTS // 100):
                await store.append(
                    "other", f"o{n}", [NewEvent("x.moved", {"n": i}) for i in range(100)]
                )
            for r in range(REPEAT):
                await fill(store, f"big{r}")
            head = await store.head_sequence()

            async def old_read_all() -> list[RecordedEvent]:
                cursor = store.events.find(
                    {"sequence": {"$gt": 0}}, sort=[("sequence", ASCENDING)], batch_size=1000
                )
                return [RecordedEvent.from_document(d) async for d in cursor]

            async def new_read_all() -> list[RecordedEvent]:
                return [e async for e in store.read_all()]

            async def old_pages() -> int:
                after, n = 0, 0
                while True:
                    cursor = store.events.find(
                        {"sequence": {"$gt": after}},
                        sort=[("sequence", ASCENDING)],
                        limit=100,
                        batch_size=100,
                    )
                    page = [RecordedEvent.from_document(d) async for d in cursor]
                    n += len(page)
                    if len(page) < 100:
                        return n
                    after = page[-1].sequence

            async def new_pages() -> int:
                after, n = 0, 0
                while True:
                    page = [e async for e in store.read_all(after, 100, batch_size=100)]
                    n += len(page)
                    if len(page) < 100:
                        return n
                    after = page[-1].sequence

            async def old_stream(stream: str, start: int = 1) -> list[RecordedEvent]:
                cursor = store.events.find(
                    {
                        "aggregateType": "account",
                        "aggregateId": stream,
                        "aggregateVersion": {"$gte": start},
                    },
                    sort=[("aggregateVersion", 1)],
                )
                return [RecordedEvent.from_document(d) async for d in cursor]

            async def new_stream(stream: str, start: int = 1) -> list[RecordedEvent]:
                return [e async for e in store.read_stream("account", stream, start)]

            rows = []
            rows.append(
                (
                    "read_all, 5,000 events, empty archive",
                    await timed(old_read_all),
                    await timed(new_read_all),
                )
            )
            rows.append(
                (
                    "read_all in pages of 100, empty archive",
                    await timed(old_pages),
                    await timed(new_pages),
                )
            )
            rows.append(
                (
                    "read_stream, 1,000 events, active",
                    await timed(lambda: old_stream("big0")),
                    await timed(lambda: new_stream("big0")),
                )
            )
            rows.append(
                (
                    "read_stream, nothing newer (current snapshot)",
                    await timed(lambda: old_stream("big0", 1001), 20),
                    await timed(lambda: new_stream("big0", 1001), 20),
                )
            )

            archive_times = []
            for r in range(REPEAT):
                report = await store.archive_stream("account", f"big{r}")
                assert report.events == STREAM_EVENTS
                archive_times.append(report.elapsed_s)
            assert [e.sequence async for e in store.read_all()] == list(range(1, head + 1))
            archived_stream = await timed(lambda: new_stream("big0"))
            rows.append(("read_all, 5,000 events, 5,000 archived", None, await timed(new_read_all)))

            console.print(
                f"archive_stream of a {STREAM_EVENTS:,}-event stream: median "
                f"{statistics.median(archive_times) * 1000:.0f} ms "
                f"(runs: {', '.join(f'{t * 1000:.0f}' for t in archive_times)} ms)"
            )
            console.print(
                f"read_stream of that stream once archived: {archived_stream * 1000:.1f} ms"
            )
            for name, before, after in rows:
                if before is None:
                    console.print(f"{name}: {after * 1000:.1f} ms")
                else:
                    console.print(
                        f"{name}: before {before * 1000:.1f} ms, "
                        f"now {after * 1000:.1f} ms ({after / before:.2f}x)"
                    )


if __name__ == "__main__":
    asyncio.run(main())
