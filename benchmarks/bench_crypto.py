"""What encrypting personal fields costs on append and on replay (crypto-shredding).

    python benchmarks/bench_crypto.py [--quick]

Every event is bank-shaped: `account.created`-like data with one personal field (the
owner's name, whose subject is the owner) and API metadata (userName, ipAddress,
userAgent: the caller's). Two databases on one server, the same schemas:
- raw transaction: a raw PyMongo transaction (counter $inc + insert_one), the baseline;
- append, clear: `EventStore.append` with no master key (a database that never encrypted);
- append, encrypted, known subjects: owners and callers from pools of 50 (their keys cached:
  four AES-GCM encryptions per event);
- append, encrypted, a new owner each: the owner's data key is made (wrapped, inserted)
  before the append: one read and one insert more.
Then replay (`read_all` of everything written, in global order): clear, encrypted with
every key cached, and encrypted by a fresh store (cold cache: one read per key).
Ratios are in the same run; rounds alternate.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from pymongo.asynchronous.database import AsyncDatabase

from common import (
    alternating_rounds,
    benchmark_server,
    console,
    database,
    print_table,
    quick_main,
    ratio_rows,
    raw_transaction,
)
from esmongo import EventStore, NewEvent
from esmongo.codec import Document
from esmongo.schema.registry import EventSchema, SchemaRegistry
from esmongo.store.data_keys import DataKeys, MasterKeys, new_master_key
from esmongo.store.event_store import EVENT_INDEXES

SCHEMA = EventSchema(
    "account.created",
    "1.0",
    {
        "type": "object",
        "required": ["ownerId", "ownerName", "currency"],
        "properties": {
            "ownerId": {"type": "string"},
            "ownerName": {"type": "string", "x-personal": {"subject": "ownerId"}},
            "currency": {"type": "string"},
        },
    },
)
POOL = 50


def event(owner: str, caller: int) -> NewEvent:
    metadata = {
        "userId": f"teller{caller}",
        "userName": f"Teller Number {caller}",
        "ipAddress": f"10.0.{caller}.7",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) bench",
        "source": "api",
        "correlationId": f"corr_{uuid.uuid4().hex}",
    }
    data = {"ownerId": owner, "ownerName": f"Owner {owner[:8]} Smith", "currency": "EUR"}
    return NewEvent("account.created", data, metadata=metadata)


def store(db: AsyncDatabase[Document], master: str | None) -> EventStore:
    keys = DataKeys(db, MasterKeys.parse(master) if master else None)
    return EventStore(db, registry=SchemaRegistry([SCHEMA]), keys=keys)


async def run(n: int, writers: int, rounds: int) -> None:
    master = new_master_key()
    with benchmark_server() as uri:
        async with (
            database(uri, "bench_crypto_clear") as clear_db,
            database(uri, "bench_crypto_enc") as enc_db,
        ):
            clear, enc = store(clear_db, None), store(enc_db, master)
            for s in (clear, enc):
                await s.init()
            await clear_db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
            counter = [0]

            def next_caller() -> int:
                counter[0] += 1
                return counter[0] % POOL

            async def append(s: EventStore, owner: str) -> None:
                await s.append("account", uuid.uuid4().hex, [event(owner, next_caller())])

            shapes: dict[str, Any] = {
                "raw transaction": lambda: raw_transaction(clear_db, uuid.uuid4().hex),
                "append, clear": lambda: append(clear, f"u{next_caller()}"),
                "append, encrypted, known subjects": lambda: append(enc, f"u{next_caller()}"),
                "append, encrypted, a new owner each": lambda: append(enc, uuid.uuid4().hex),
            }
            results = await alternating_rounds(shapes, (1, writers), n, rounds)
            rows = ratio_rows(results, list(shapes), (1, writers), lambda _: "append, clear")
            print_table(
                f"One event per append, {n} per row, best of {rounds} alternating rounds",
                ["writers", "shape", "rate", "p50 ms", "vs raw", "vs clear"],
                rows,
            )
            await replay(clear, enc, enc_db, master, rounds)


async def replay(
    clear: EventStore, enc: EventStore, enc_db: AsyncDatabase[Document], master: str, rounds: int
) -> None:
    """read_all of each log, best of `rounds`, alternating."""

    same = await clear.head_sequence()  # as many events of each log (the encrypted has more)

    async def read(s: EventStore) -> tuple[int, float]:
        started = time.perf_counter()
        count = 0
        async for _ in s.read_all(0, same):
            count += 1
        return count, time.perf_counter() - started

    best_rate: dict[str, float] = {}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for label, make in (
            ("clear", lambda: clear),
            ("encrypted, keys cached", lambda: enc),
            ("encrypted, cold cache", lambda: store(enc_db, master)),
        ):
            count, elapsed = await read(make())
            counts[label] = count
            best_rate[label] = max(best_rate.get(label, 0.0), count / elapsed)
    base = best_rate["clear"]
    print_table(
        f"Replay (read_all, global order), best of {rounds}",
        ["log", "events", "rate", "vs clear"],
        [
            [label, f"{counts[label]:,}", f"{rate:,.0f}/s", f"{rate / base:.2f}x"]
            for label, rate in best_rate.items()
        ],
    )
    keys = await enc_db.esmongo_data_keys.count_documents({})
    console.print(f"data keys in the encrypted database: {keys:,}")


if __name__ == "__main__":
    quick_main(run)
