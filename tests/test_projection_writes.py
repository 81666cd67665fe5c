"""Merging a batch's writes: fewer operations, and always the same result as one by one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import Delete, Insert, RecordedEvent, Update
from esmongo.projections import Projection, WritePlan, handles

Db = AsyncDatabase[dict[str, Any]]


def test_many_updates_of_one_document_become_one() -> None:
    plan = WritePlan()
    key = {"accountId": "a1"}
    plan.add(Update("acc", key, set={"balance": Decimal("0"), "stats.count": 0}))
    for i in range(1, 21):
        plan.add(
            Update(
                "acc",
                key,
                set={"balance": Decimal(i)},
                inc={"stats.count": 1, "stats.total": Decimal("1.10")},
                max={"last": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i)},
                upsert=False,
            )
        )
    ops = plan.operations()["acc"]
    assert plan.writes == 21 and len(ops) == 1
    (op,) = ops
    assert isinstance(op, UpdateOne)
    doc = op._doc
    assert doc["$set"] == {"balance": Decimal(20), "stats.count": 20}
    assert doc["$inc"] == {"stats.total": Decimal("22.00")}
    assert doc["$max"]["last"] == datetime(2024, 1, 1, 0, 20, tzinfo=UTC)


def test_an_insert_keeps_later_updates_after_it() -> None:
    plan = WritePlan()
    plan.add(Update("c", {"k": 1}, inc={"n": 1}))
    plan.add(Delete("c", {"k": 1}))
    plan.add(Update("c", {"k": 1}, inc={"n": 1}))
    plan.add(Insert("d", {"_id": 1}))
    assert [type(op).__name__ for op in plan.operations()["c"]] == [
        "UpdateOne",
        "DeleteOne",
        "UpdateOne",
    ]


async def test_handlers_may_only_write_their_collections() -> None:
    class Bad(Projection):
        name = "bad"
        collections = {"mine": []}

        @handles("x")
        def on_x(self, event: Any) -> Update:
            return Update("theirs", {"k": 1}, set={"a": 1})

    event = RecordedEvent("e1", "x", "1.0", "t", "i", 1, {}, {}, datetime.now(UTC), 1)
    assert Bad().event_types == ("x",)
    with pytest.raises(ValueError, match="theirs"):
        await Bad().apply(event)


def _random_update(rng: random.Random, key: int) -> Update:
    paths = ["n", "m", "s.x", "s.y", "s", "d"]
    ops: dict[str, dict[str, Any]] = {"set": {}, "inc": {}, "max": {}, "min": {}, "soi": {}}
    unset: list[str] = []
    used: list[str] = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        if any(p == path or p.startswith(path + ".") or path.startswith(p + ".") for p in used):
            continue
        used.append(path)
        if path == "s":
            choice = rng.choice(["set", "unset"])
            if choice == "set":
                ops["set"][path] = {"x": rng.randint(0, 5)}
            else:
                unset.append(path)
            continue
        if path == "d":
            when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randint(0, 50))
            ops[rng.choice(["set", "max", "min"])][path] = when
            continue
        op = rng.choice(["set", "inc", "inc", "max", "min", "soi", "unset"])
        value = Decimal(rng.randint(-500, 500)) / 100 if rng.random() < 0.5 else rng.randint(-9, 9)
        if op == "unset":
            unset.append(path)
        else:
            ops[op][path] = value
    return Update(
        "merge",
        {"k": key},
        set=ops["set"],
        inc=ops["inc"],
        max=ops["max"],
        min=ops["min"],
        set_on_insert=ops["soi"],
        unset=unset,
        upsert=rng.random() < 0.8,
    )


async def test_merged_plan_gives_the_same_documents_as_sequential_updates(db: Db) -> None:
    """Random updates (conflicting paths, $inc after $set, $max on dates, unsets, upserts)
    applied one at a time vs merged into one bulk write: the documents must match."""
    rng = random.Random(12345)
    for round_ in range(12):
        writes = [_random_update(rng, rng.randint(1, 4)) for _ in range(40)]
        one, merged = db[f"one_{round_}"], db[f"merged_{round_}"]
        for write in writes:
            update: dict[str, Any] = {}
            for op, values in (
                ("$set", write.set),
                ("$inc", write.inc),
                ("$max", write.max),
                ("$min", write.min),
                ("$setOnInsert", write.set_on_insert),
            ):
                if values:
                    update[op] = dict(values)
            if write.unset:
                update["$unset"] = {p: "" for p in write.unset}
            await one.update_one(dict(write.key), update, upsert=write.upsert)
        plan = WritePlan()
        for write in writes:
            plan.add(write.__class__(**{**write.__dict__, "collection": f"merged_{round_}"}))
        ops = plan.operations()[f"merged_{round_}"]
        assert len(ops) < len(writes)
        await merged.bulk_write(ops, ordered=True)
        expected = {d["k"]: d async for d in one.find({}, {"_id": 0})}
        actual = {d["k"]: d async for d in merged.find({}, {"_id": 0})}
        assert actual == expected, f"round {round_}"
