"""What every benchmark needs: a server, a database, timing statistics and a table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from rich.console import Console
from rich.table import Table

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer
from esmongo.events import utc_now
from esmongo.store.transactions import DURABLE

console = Console()


async def raw_transaction(
    db: AsyncDatabase[Document],
    key: str,
    log: AsyncDatabase[Document] | None = None,
    *,
    document: Callable[[int], Document] | None = None,
    snapshot: bool = False,
) -> None:
    """The baseline of an append: PyMongo's own retrying transaction, counter $inc +
    insert_one of one event (into `log`, a second database, when given). `document(seq)`:
    the event to insert instead of a small one; `snapshot`: with the read and write
    concerns esmongo's transactions use."""
    counters = db.get_collection("raw_counters", write_concern=DURABLE)
    events = (log if log is not None else db).get_collection("raw_events", write_concern=DURABLE)

    async def body(session: AsyncClientSession) -> None:
        counter = await counters.find_one_and_update(
            {"_id": "seq"},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert counter is not None
        seq = int(counter["value"])
        if document is not None:
            await events.insert_one(document(seq), session=session)
            return
        doc = {
            "_id": seq,
            "sequence": seq,
            "eventId": key,
            "aggregateType": "acct",
            "aggregateId": key,
            "aggregateVersion": 1,
            "data": {"n": 1},
            "timestamp": utc_now(),
        }
        await events.insert_one(doc, session=session)

    concerns: dict[str, Any] = (
        {"read_concern": ReadConcern("snapshot"), "write_concern": DURABLE} if snapshot else {}
    )
    async with db.client.start_session() as session:
        await session.with_transaction(body, **concerns)


@contextlib.contextmanager
def benchmark_server() -> Iterator[str]:
    """MONGODB_URI when set, else a fresh embedded server in a temp dir. Yields the URI."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with (
        tempfile.TemporaryDirectory(prefix="esmongo-bench-") as home,
        EmbeddedServer(home) as server,
    ):
        if server.info is not None:
            _EMBEDDED_PIDS[server.uri] = server.info.pid
        try:
            yield server.uri
        finally:
            _EMBEDDED_PIDS.pop(server.uri, None)


_EMBEDDED_PIDS: dict[str, int] = {}


def server_pid(uri: str) -> int | None:
    """The process of the embedded server `benchmark_server` started at `uri`, if any."""
    return _EMBEDDED_PIDS.get(uri)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM a child and wait for it off the event loop: a blocking wait would stall this
    process's writer heartbeat, and the next store to start would take it for dead."""
    process.terminate()
    await asyncio.to_thread(process.wait, timeout_s)


@contextlib.asynccontextmanager
async def database(uri: str, name: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database on that server, dropped afterwards."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        await client.drop_database(name)
        yield client.get_database(name, codec_options=CODEC_OPTIONS)
        await client.drop_database(name)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def benchmark_db(name: str) -> AsyncIterator[AsyncDatabase[Document]]:
    with benchmark_server() as uri:
        async with database(uri, name) as db:
            yield db


def percentile(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Timing:
    """Per-operation latencies and the items they moved."""

    label: str
    latencies: list[float]
    items: int
    elapsed: float
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds an item, by process (Stopwatch's `processes`)."""
    batch: float | None = None
    """Appends a store transaction carried meanwhile (the group-commit batch), if counted."""

    @property
    def rate(self) -> float:
        return self.items / self.elapsed if self.elapsed else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else 0.0


class Stopwatch:
    """Latencies of laps; with `processes` (name: pid), the CPU each spent meanwhile."""

    def __init__(self, processes: Mapping[str, int | None] | None = None) -> None:
        self.latencies: list[float] = []
        self.processes = {name: pid for name, pid in (processes or {}).items() if pid}
        self.cpu_started = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def lap(self) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.latencies.append(time.perf_counter() - t)

    def timing(self, label: str, items: int) -> Timing:
        elapsed = time.perf_counter() - self.started
        cpu = {}
        for name, pid in self.processes.items():
            now, then = cpu_seconds(pid), self.cpu_started[name]
            if now is not None and then is not None and items:
                cpu[name] = (now - then) * 1000 / items
        return Timing(label, self.latencies, items, elapsed, cpu)


Op = Callable[[], Awaitable[Any]]


async def alternating_rounds(
    shapes: Mapping[str, Op],
    widths: Sequence[int],
    n: int,
    rounds: int,
    around: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[tuple[str, int], list[Timing]]:
    """Each shape at each width (concurrent workers), `n` operations a row, rounds
    alternating so that drift hits every row alike. `around(label)` wraps a row."""
    results: dict[tuple[str, int], list[Timing]] = {}
    for _ in range(rounds):
        for width in widths:
            for label, op in shapes.items():
                watch = Stopwatch()

                async def worker(count: int, op: Op = op, watch: Stopwatch = watch) -> None:
                    for _ in range(count):
                        with watch.lap():
                            await op()

                with around(label) if around is not None else contextlib.nullcontext():
                    await asyncio.gather(*(worker(n // width) for _ in range(width)))
                results.setdefault((label, width), []).append(
                    watch.timing(label, (n // width) * width)
                )
    return results


def best(results: dict[tuple[str, int], list[Timing]], label: str, width: int) -> Timing:
    return max(results[(label, width)], key=lambda t: t.rate)


def ratio_rows(
    results: dict[tuple[str, int], list[Timing]],
    labels: Sequence[str],
    widths: Sequence[int],
    versus: Callable[[str], str | None] | None = None,
    base: str = "raw transaction",
) -> list[list[str]]:
    """Rows of width, label, rate, p50 and the rate against `base` at that width; with
    `versus`, one more column against the row it names for each label (None: left empty)."""
    rows = []
    for width in widths:
        base_rate = best(results, base, width).rate
        for label in labels:
            found = best(results, label, width)
            row = [
                f"{width}",
                label,
                f"{found.rate:,.0f}/s",
                f"{found.p50_ms:.1f}",
                f"{found.rate / base_rate:.2f}x",
            ]
            if versus is not None:
                other = versus(label)
                row.append(f"{found.rate / best(results, other, width).rate:.2f}x" if other else "")
            rows.append(row)
    return rows


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def quick_main(run: Callable[[int, int, int], Awaitable[None]], writers: int = 16) -> None:
    """`--quick` (160 per row, 2 rounds) or the full run (640, 3): the alternating benchmarks'
    command line."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    n, rounds = (160, 2) if parser.parse_args().quick else (640, 3)
    asyncio.run(run(n, writers, rounds))
    console.print("done")
