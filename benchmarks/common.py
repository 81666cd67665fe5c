"""What every benchmark needs: a server, a database, timing statistics and a table."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from rich.console import Console
from rich.table import Table

from esmongo.embedded import EmbeddedServer
from esmongo.mongo import CODEC_OPTIONS, Document

console = Console()


@contextlib.asynccontextmanager
async def benchmark_db(name: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """MONGODB_URI when set, else a fresh embedded server in a temp dir; a fresh database."""
    with contextlib.ExitStack() as stack:
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="esmongo-bench-"))
            server = stack.enter_context(EmbeddedServer(home))
            uri = server.uri
        client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
        try:
            await client.drop_database(name)
            yield client.get_database(name, codec_options=CODEC_OPTIONS)
            await client.drop_database(name)
        finally:
            await client.close()


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
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def lap(self) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.latencies.append(time.perf_counter() - t)

    def timing(self, label: str, items: int) -> Timing:
        return Timing(label, self.latencies, items, time.perf_counter() - self.started)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)
