"""Append and load, against raw PyMongo on the same server in the same run.

    python benchmarks/bench_store.py [--quick]

Rows: a raw transaction (counter $inc + insert_one) vs `append` of 1 event; raw
`insert_many` of 100 documents vs `append` of 100 events; loading a 10,000-event account
(snapshots every 50, so at most 49 events replayed) vs a 49-event one with no snapshot.
Targets (issue 2): 1-event append >= 0.8x raw; 100-event append >= 0.7x raw insert_many;
the 10,000-event load within 2x of the short one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

sys.path.insert(0, str(Path(__file__).parent))

from common import Stopwatch, Timing, benchmark_db, console, print_table
from esmongo import NO_STREAM, NewEvent, Repository
from esmongo.bank import Account, Bank
from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.store.event_store import EVENT_INDEXES

DURABLE = WriteConcern("majority", j=True)


def raw_doc(seq: int, stream: str, version: int) -> dict[str, Any]:
    now = utc_now()
    return {
        "_id": seq,
        "eventId": f"raw_{stream}_{version}",
        "eventType": "account.credited",
        "eventVersion": "1.0",
        "aggregateType": "account",
        "aggregateId": stream,
        "aggregateVersion": version,
        "data": credit(version),
        "metadata": {"timestamp": now, "userId": "bench"},
        "timestamp": now,
        "sequence": seq,
    }


def credit(n: int) -> dict[str, Any]:
    return {
        "amount": Decimal("1.00"),
        "currency": "EUR",
        "transactionId": f"t{n}",
        "reason": None,
        "balanceAfter": Decimal(n),
    }


async def raw_append(db: AsyncDatabase[Document], stream: str, version: int) -> None:
    """The baseline: one raw PyMongo transaction, counter `$inc` + `insert_one`."""
    async with (
        db.client.start_session() as session,
        await session.start_transaction(write_concern=DURABLE),
    ):
        doc = await db.raw_counters.find_one_and_update(
            {"_id": "seq"},
            {"$inc": {"value": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert doc is not None
        events = db.get_collection("raw_events", write_concern=DURABLE)
        await events.insert_one(raw_doc(doc["value"], stream, version), session=session)


async def raw_transactions(db: AsyncDatabase[Document], n: int, prefix: str) -> Timing:
    await db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
    await db.raw_counters.update_one({"_id": "seq"}, {"$setOnInsert": {"value": 0}}, upsert=True)
    watch = Stopwatch()
    for i in range(n):
        with watch.lap():
            await raw_append(db, f"{prefix}{i}", 1)
    return watch.timing("raw txn: $inc + insert_one", n)


async def raw_insert_many(db: AsyncDatabase[Document], batches: int, size: int) -> Timing:
    events = db.get_collection("raw_many", write_concern=DURABLE)
    await events.create_indexes(EVENT_INDEXES)
    watch = Stopwatch()
    seq = 0
    for b in range(batches):
        docs = []
        for v in range(1, size + 1):
            seq += 1
            docs.append(raw_doc(seq, f"m{b}", v))
        with watch.lap():
            await events.insert_many(docs)
    return watch.timing(f"raw insert_many({size})", batches * size)


async def appends(bank: Bank, n: int, size: int, prefix: str) -> Timing:
    watch = Stopwatch()
    for i in range(n):
        batch = [NewEvent("account.credited", credit(v)) for v in range(1, size + 1)]
        with watch.lap():
            await bank.store.append("account", f"{prefix}{i}", batch, NO_STREAM)
    return watch.timing(f"esmongo append({size})", n * size)


async def build_account(bank: Bank, account_id: str, events: int) -> None:
    """created + activated + credits, appended in batches of 500."""
    head = [
        NewEvent("account.created", {"ownerId": "u", "ownerName": "Bench", "currency": "EUR"}),
        NewEvent("account.activated", {}),
    ]
    pending = head + [NewEvent("account.credited", credit(n)) for n in range(1, events - 1)]
    version = 0
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        await bank.store.append("account", account_id, chunk, version or NO_STREAM)
        version += len(chunk)


async def loads(repo: Repository[Account], account_id: str, n: int, label: str) -> Timing:
    watch = Stopwatch()
    for _ in range(n):
        with watch.lap():
            await repo.load(account_id)
    return watch.timing(label, n)


async def main(quick: bool) -> None:
    n_txn, n_many, n_load = (100, 10, 30) if quick else (400, 30, 100)
    async with benchmark_db("bench_store") as db:
        bank = await Bank(db, snapshot_every=50).init()
        # Warm up both paths once, so connection setup is not measured.
        await raw_transactions(db, 5, "warm")
        await appends(bank, 5, 1, "warm")

        raw1 = await raw_transactions(db, n_txn, "r")
        ours1 = await appends(bank, n_txn, 1, "one")
        raw100 = await raw_insert_many(db, n_many, 100)
        ours100 = await appends(bank, n_many, 100, "hundred")

        await build_account(bank, "long", 9_999)
        await build_account(bank, "short", 49)
        # The policy writes a snapshot at each multiple of 50: the long account's last one
        # is at 9,950, so a load reads it and replays 49 events, like the short one.
        at_9950 = Account("long")
        async for event in bank.store.read_stream("account", "long", to_version=9_950):
            at_9950.apply(event)
        await bank.snapshots.save("account", "long", 9_950, at_9950.snapshot_state(), 1)
        no_snapshots = Repository(bank.store, Account)
        await loads(bank.accounts, "short", 5, "warm")
        short = await loads(bank.accounts, "short", n_load, "load 49 events, no snapshot")
        long = await loads(bank.accounts, "long", n_load, "load 9,999 events, snapshot at 9,950")
        full = await loads(
            no_snapshots, "long", max(3, n_load // 20), "load 9,999 events, full replay"
        )

    rows = []
    for raw, ours, target in ((raw1, ours1, 0.8), (raw100, ours100, 0.7)):
        for t in (raw, ours):
            ratio = f"{ours.rate / raw.rate:.2f}x (target >= {target})" if t is ours else "1.00x"
            rows.append((t.label, f"{t.rate:,.0f}", f"{t.p50_ms:.2f}", f"{t.p99_ms:.2f}", ratio))
    print_table(
        "Appends (events/s; latency per call)",
        ["operation", "events/s", "p50 ms", "p99 ms", "vs raw"],
        rows,
    )
    load_rows = [
        (
            t.label,
            f"{t.mean_ms:.2f}",
            f"{t.p50_ms:.2f}",
            f"{t.p99_ms:.2f}",
            f"{t.mean_ms / short.mean_ms:.2f}x",
        )
        for t in (short, long, full)
    ]
    print_table(
        "Aggregate loads (target: snapshot load within 2x of the short one)",
        ["load", "mean ms", "p50 ms", "p99 ms", "vs short"],
        load_rows,
    )
    console.print(
        f"ratios: append(1) {ours1.rate / raw1.rate:.2f}x, append(100) "
        f"{ours100.rate / raw100.rate:.2f}x, long load {long.mean_ms / short.mean_ms:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    asyncio.run(main(parser.parse_args().quick))
