"""What keeping the log in a database of its own costs an append (ADR 0017).

    python benchmarks/bench_layout.py [--quick]

Rows, each appending one event to a new stream, one writer and 16 concurrent:
- raw transaction: a raw PyMongo transaction (counter $inc + insert_one), the baseline;
- raw transaction, two databases: the same with the insert into another database;
- append, one database: `EventStore.append`, the default layout;
- append, log database: the same with the log in a database of its own
  (esmongo.store.layout), the counter in the main one.
Ratios are against the raw transaction (and the one-database append) in the same run;
rounds alternate.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


from common import (
    alternating_rounds,
    benchmark_db,
    print_table,
    quick_main,
    ratio_rows,
    raw_transaction,
)
from esmongo import EventStore, NewEvent
from esmongo.store.event_store import EVENT_INDEXES
from esmongo.store.layout import database_named, log_database, use_log_database


async def run(n: int, writers: int, rounds: int) -> None:
    async with benchmark_db("bench_layout") as db:
        split = database_named(db, "bench_layout_split")
        log = database_named(db, "bench_layout_split_log")
        for name in (split.name, log.name):
            await db.client.drop_database(name)
        try:
            one = EventStore(db)
            await one.init()
            await use_log_database(split, log.name)
            two = EventStore(split, log_db=await log_database(split))
            await two.init()
            for where in (db, log):
                await where.get_collection("raw_events").create_indexes(EVENT_INDEXES)

            async def append(store: EventStore) -> None:
                await store.append("acct", uuid.uuid4().hex, [NewEvent("thing.made", {"n": 1})])

            shapes = {
                "raw transaction": lambda: raw_transaction(db, uuid.uuid4().hex),
                "raw transaction, two databases": lambda: raw_transaction(
                    split, uuid.uuid4().hex, log
                ),
                "append, one database": lambda: append(one),
                "append, log database": lambda: append(two),
            }
            results = await alternating_rounds(shapes, (1, writers), n, rounds)
            rows = ratio_rows(
                results,
                list(shapes),
                (1, writers),
                lambda label: "append, one database" if label.startswith("append") else None,
            )
            print_table(
                f"One event per append, {n} per row, best of {rounds} alternating rounds",
                ["writers", "shape", "rate", "p50 ms", "vs raw", "vs one database"],
                rows,
            )
        finally:
            for name in (split.name, log.name):
                await db.client.drop_database(name)


if __name__ == "__main__":
    quick_main(run)
