"""Catch-up from zero: updates of documents that do not exist yet become inserts, with the
same result as the merged updates (esmongo.projections.fresh.FreshCollections)."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.projections.fresh import FreshCollections
from esmongo.projections.writes import (
    Insert,
    Update,
    Write,
    WritePlan,
    execute,
)


def plan_of(*writes: Write) -> WritePlan:
    plan = WritePlan()
    plan.extend(writes)
    return plan


def test_new_documents_are_inserted_and_known_ones_updated() -> None:
    fresh = FreshCollections({"rm"})
    first = plan_of(
        Update("rm", {"k": "a"}, set={"n.x": 1}, inc={"c": 1}, set_on_insert={"born": 1}),
        Update("rm", {"k": "b"}, inc={"c": 2}),
        Update("rm", {"k": "a"}, inc={"c": 5}, max={"m": 3}),
        Update("rm", {"k": "z"}, set={"gone": 1}, upsert=False),  # missing: matches nothing
    )
    ops = first.operations(fresh)["rm"]
    assert [type(op) for op in ops] == [InsertOne, InsertOne]
    assert [op._doc for op in ops] == [  # type: ignore[union-attr]
        {"k": "a", "born": 1, "n": {"x": 1}, "c": 6, "m": 3},
        {"k": "b", "c": 2},
    ]
    second = plan_of(Update("rm", {"k": "a"}, inc={"c": 1}), Update("rm", {"k": "c"}, inc={"c": 1}))
    ops = second.operations(fresh)["rm"]
    assert [type(op) for op in ops] == [InsertOne, UpdateOne]  # c is new, a exists


def test_collections_that_insert_use_other_keys_or_were_not_empty_are_merged() -> None:
    fresh = FreshCollections({"rm", "log", "odd"})
    plan = plan_of(
        Insert("log", {"_id": 1}),
        Update("log", {"k": "a"}, inc={"c": 1}),
        Update("other", {"k": "a"}, inc={"c": 1}),  # not found empty at the start
        Update("odd", {"k": None}, inc={"c": 1}),  # null also matches a missing field
    )
    ops = plan.operations(fresh)
    assert [type(op) for op in ops["log"]] == [InsertOne, UpdateOne]
    assert [type(op) for op in ops["other"]] == [UpdateOne]
    assert [type(op) for op in ops["odd"]] == [UpdateOne]
    assert {"log", "odd"} <= fresh.mixed
    later = plan_of(Update("log", {"k": "b"}, inc={"c": 1}))  # for good
    assert [type(op) for op in later.operations(fresh)["log"]] == [UpdateOne]
    shapes = FreshCollections({"rm"})
    plan_of(Update("rm", {"k": "a"}, inc={"c": 1})).operations(shapes)
    mixed = plan_of(Update("rm", {"j": "a"}, inc={"c": 1})).operations(shapes)
    assert [type(op) for op in mixed["rm"]] == [UpdateOne]


def random_writes(rng: random.Random, keys: int) -> list[Write]:
    writes: list[Write] = []
    for _ in range(60):
        key = {"k": f"a{rng.randrange(keys)}", "region": rng.choice(["eu", "us"])}
        kind = rng.randrange(5)
        if kind == 0:
            writes.append(
                Update(
                    "rm",
                    key,
                    set={"owner.name": rng.choice("xyz"), "status": "open"},
                    set_on_insert={"created": rng.randrange(100)},
                )
            )
        elif kind == 1:
            writes.append(Update("rm", key, inc={"total": Decimal("1.25"), "count": 1}))
        elif kind == 2:
            writes.append(Update("rm", key, max={"peak": rng.randrange(50)}))
        elif kind == 3:
            writes.append(Update("rm", key, unset=["status"], set={"closed": True}))
        else:
            writes.append(Update("rm", key, set={"touched": True}, upsert=False))
    return writes


async def contents(db: AsyncDatabase[Document], name: str) -> list[dict[str, Any]]:
    docs = [{k: v for k, v in d.items() if k != "_id"} async for d in db[name].find({})]
    return sorted(docs, key=lambda d: (d["k"], d["region"]))


async def test_fresh_and_merged_writes_leave_the_same_documents(
    db: AsyncDatabase[Document],
) -> None:
    rng = random.Random(14)
    fresh = FreshCollections({"rm"})
    for _ in range(6):
        writes = random_writes(rng, keys=12)
        for target, mode in (("with_inserts", fresh), ("merged", None)):
            async with (
                db.client.start_session() as session,
                await session.start_transaction(),
            ):
                await execute(session, db, plan_of(*writes), {"rm": target}, mode)
    merged = await contents(db, "merged")
    assert merged and await contents(db, "with_inserts") == merged
    assert fresh.size == len(merged)
