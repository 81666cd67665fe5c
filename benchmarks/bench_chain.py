"""What the tamper-evident chain costs on the write path, and what verifying it costs.

    python benchmarks/bench_chain.py [--quick]

Rows, each appending one event to a new stream, one writer and 16 concurrent:
- raw transaction: a raw PyMongo transaction (counter $inc + insert_one), the baseline;
- append, chain off: `EventStore.append` with the chain taken out in this process (the
  hashing and the previous-hash lookup replaced by no-ops: a measurement aid only, the
  store has no such switch);
- append, chain on: as shipped;
- two stores taking turns, chain off / on: two EventStores (two processes' writers) taking
  turns, so with the chain on each transaction reads the previous event's hash.
Then `verify_chain` over everything written, against a raw scan of the same documents.
Ratios are against the raw transaction (and chain off) in the same run; rounds alternate.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    alternating_rounds,
    benchmark_db,
    console,
    print_table,
    quick_main,
    ratio_rows,
    raw_transaction,
)
from esmongo import EventStore, NewEvent
from esmongo.ops.check.chain import verify_chain
from esmongo.store import batch_writer
from esmongo.store.chain import ChainHead
from esmongo.store.event_store import EVENT_INDEXES


@contextlib.contextmanager
def chain_off() -> Iterator[None]:
    """The write path without the chain's work (for this measurement only)."""

    async def nothing_before(self: ChainHead, *args: Any) -> str:
        return ""

    saved_chain, saved_before = batch_writer.chain, ChainHead.before
    batch_writer.chain = lambda previous, docs: ""  # type: ignore[assignment]
    ChainHead.before = nothing_before  # type: ignore[method-assign]
    try:
        yield
    finally:
        batch_writer.chain, ChainHead.before = saved_chain, saved_before  # type: ignore[method-assign]


async def run(n: int, writers: int, rounds: int) -> None:
    async with benchmark_db("bench_chain") as db:
        store, other = EventStore(db), EventStore(db)
        await store.init()
        await db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
        turn = [0]

        async def append(s: EventStore) -> None:
            await s.append("acct", uuid.uuid4().hex, [NewEvent("thing.made", {"n": 1})])

        async def taking_turns() -> None:
            turn[0] += 1
            await append(store if turn[0] % 2 else other)

        shapes = {
            "raw transaction": lambda: raw_transaction(db, uuid.uuid4().hex),
            "append, chain off": lambda: append(store),
            "append, chain on": lambda: append(store),
            "two stores taking turns, chain off": taking_turns,
            "two stores taking turns, chain on": taking_turns,
        }

        def around(label: str) -> contextlib.AbstractContextManager[None]:
            # The unchained rows write events without hashes, which verify below counts
            # as breaks after the chain began: only its speed is measured there.
            return chain_off() if "off" in label else contextlib.nullcontext()

        results = await alternating_rounds(shapes, (1, writers), n, rounds, around)
        rows = ratio_rows(
            results,
            list(shapes),
            (1, writers),
            lambda label: label.replace(" on", " off") if " on" in label else None,
        )
        print_table(
            f"One event per append, {n} per row, best of {rounds} alternating rounds",
            ["writers", "shape", "rate", "p50 ms", "vs raw", "vs chain off"],
            rows,
        )
        started = time.perf_counter()
        scanned = 0
        async for _ in db.events.find({}, sort=[("sequence", 1)], batch_size=2000):
            scanned += 1
        scan_s = time.perf_counter() - started
        report = await verify_chain(db)
        console.print(
            f"verify: {report.events:,} events ({report.chained:,} chained) in "
            f"{report.elapsed_s:.2f} s, {report.events / report.elapsed_s:,.0f}/s; raw scan of "
            f"{scanned:,} in {scan_s:.2f} s, {scanned / scan_s:,.0f}/s: "
            f"{(report.events / report.elapsed_s) / (scanned / scan_s):.2f}x"
        )


if __name__ == "__main__":
    quick_main(run)
