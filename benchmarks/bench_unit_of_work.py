"""An idempotency record in the append's transaction vs a claim before and a completion after.

    python benchmarks/bench_unit_of_work.py [--quick]

Rows, each a command's writes on a new stream, sequential (one writer) and 16 concurrent:
- raw: a raw PyMongo transaction (counter $inc + insert_one), the baseline;
- claim + complete: insert the claim, `append`, update the claim with the response
  (what the service did before the unit of work: three writes, two of them outside);
- unit of work: `append(..., writes=[InsertOne(record)])`, one transaction.
Ratios are against raw in the same run. Rounds alternate so drift hits all rows alike.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from pymongo import InsertOne
from pymongo.write_concern import WriteConcern

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
from esmongo.codec import Document
from esmongo.events import utc_now
from esmongo.store.event_store import EVENT_INDEXES
from esmongo.store.unit_of_work import DocumentWrite

DURABLE = WriteConcern("majority", j=True)


def record(key: str) -> Document:
    now = utc_now()
    return {"_id": key, "status": 201, "body": '{"ok": true}', "createdAt": now}


async def claim_complete(store: EventStore, key: str) -> None:
    keys = store.db.get_collection("claimed_keys", write_concern=DURABLE)
    await keys.insert_one({**record(key), "status": None, "body": None})
    await store.append("acct", key, [NewEvent("thing.made", {"n": 1})])
    await keys.update_one({"_id": key}, {"$set": {"status": 201, "body": '{"ok": true}'}})


async def unit_of_work(store: EventStore, key: str) -> None:
    write = DocumentWrite("uow_keys", InsertOne(record(key)))
    await store.append("acct", key, [NewEvent("thing.made", {"n": 1})], writes=[write])


async def run(n: int, writers: int, rounds: int) -> None:
    async with benchmark_db("bench_uow") as db:
        store = EventStore(db)
        await store.init()
        await db.get_collection("raw_events").create_indexes(EVENT_INDEXES)
        shapes = {
            "raw transaction": lambda: raw_transaction(db, uuid.uuid4().hex),
            "claim + append + complete": lambda: claim_complete(store, uuid.uuid4().hex),
            "append with writes (unit of work)": lambda: unit_of_work(store, uuid.uuid4().hex),
        }
        results = await alternating_rounds(shapes, (1, writers), n, rounds)
        rows = ratio_rows(results, list(shapes), (1, writers))
        print_table(
            f"A command's writes, {n} per row, best of {rounds} alternating rounds",
            ["writers", "shape", "rate", "p50 ms", "vs raw"],
            rows,
        )


if __name__ == "__main__":
    quick_main(run)
