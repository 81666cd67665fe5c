"""Merging a batch's writes: fewer operations, and always the same result as one by one."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from bson import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent, RecordedEvent
from esmongo.projections import (
    Delete,
    Insert,
    Projection,
    ProjectionRunner,
    RunnerOptions,
    Update,
    WritePlan,
    handles,
)

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


# ---- one document, its key spelled in several ways -----------------------------------


def _lifecycle(name: str) -> Projection:
    """A door opened, frozen, closed; the frozen handler spells the key in another order."""

    class Lifecycle(Projection):
        collections = {name: []}

        @handles("door.opened", "door.frozen", "door.closed")
        def moved(self, event: RecordedEvent) -> Update:
            status = event.event_type.removeprefix("door.")
            key: dict[str, Any] = {"doorId": event.aggregate_id, "site": "s1"}
            if status == "frozen":
                key = {"site": "s1", "doorId": event.aggregate_id}
            return Update(name, key, set={"status": status})

    Lifecycle.name = name
    return Lifecycle()


async def test_a_key_spelled_in_another_field_order_keeps_the_updates_in_order(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    for door in ("d1", "d2"):
        await store.append("door", door, [NewEvent("door.opened", {})])
        await store.append("door", door, [NewEvent("door.frozen", {})])
        await store.append("door", door, [NewEvent("door.closed", {})])
    results = {}
    for batch_size in (1, 100):
        name = f"doors_{batch_size}"
        runner = ProjectionRunner(store, _lifecycle(name), RunnerOptions(batch_size=batch_size))
        await runner.init()
        await runner.catch_up()
        results[batch_size] = {d["doorId"]: d["status"] async for d in db[name].find({})}
    assert results[1] == {"d1": "closed", "d2": "closed"}
    assert results[100] == results[1]


def _spell(fields: dict[str, Any], order: list[int], number: int) -> dict[str, Any]:
    """The same equality filter, its fields in `order`, its number as int, float or Int64."""
    items = list(fields.items())
    spelled = dict(items[i] for i in order if i < len(items))
    if "k" in spelled:
        k = spelled["k"]
        spelled["k"] = (k, float(k), Int64(k))[number]
    return spelled


@st.composite
def _key_writes(draw: st.DrawFn) -> list[Update | Delete]:
    writes: list[Update | Delete] = []
    for _ in range(draw(st.integers(1, 25))):
        doc = draw(st.integers(1, 3))
        full = {"k": doc, "t": "x"}
        order = draw(st.permutations([0, 1]))
        narrow = draw(st.booleans()) and draw(st.booleans())  # {k} alone: another shape
        key = _spell({"k": doc} if narrow else full, order, draw(st.integers(0, 2)))
        if draw(st.integers(0, 9)) == 0:
            writes.append(Delete("spell", key))
            continue
        ops: dict[str, Any] = {}
        choice = draw(st.sampled_from(["set", "inc", "max", "unset", "set+inc"]))
        if choice in ("set", "set+inc"):
            ops["set"] = {"status": draw(st.sampled_from(["open", "frozen", "closed"]))}
        if choice in ("inc", "set+inc"):
            ops["inc"] = {"n": draw(st.integers(-3, 3))}
        if choice == "max":
            ops["max"] = {"m": draw(st.integers(0, 9))}
        if choice == "unset":
            ops["unset"] = ["status"]
        # A key of fewer fields never creates a document: each stays the only one with its k.
        upsert = not narrow and draw(st.booleans())
        writes.append(Update("spell", key, upsert=upsert, **ops))
    return writes


def _command(write: Update | Delete) -> dict[str, Any]:
    assert isinstance(write, Update)
    update: dict[str, Any] = {}
    for op, values in (("$set", write.set), ("$inc", write.inc), ("$max", write.max)):
        if values:
            update[op] = dict(values)
    if write.unset:
        update["$unset"] = {p: "" for p in write.unset}
    return update


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writes=_key_writes(), batch=st.integers(1, 26))
async def test_merged_batches_equal_one_by_one_whatever_the_key_spelling(
    db: Db, writes: list[Update | Delete], batch: int
) -> None:
    """Random key spellings (field orders, number types, a narrower key) and batch sizes:
    the merged bulk writes leave the same documents as the writes applied one at a time."""
    one, merged = db[f"one_{uuid.uuid4().hex[:8]}"], db[f"merged_{uuid.uuid4().hex[:8]}"]
    try:
        for write in writes:
            if isinstance(write, Delete):
                await one.delete_one(dict(write.key))
            else:
                await one.update_one(dict(write.key), _command(write), upsert=write.upsert)
        for start in range(0, len(writes), batch):
            plan = WritePlan()
            plan.extend(writes[start : start + batch])
            for ops in plan.operations().values():
                await merged.bulk_write(ops, ordered=True)
        expected = sorted([d async for d in one.find({}, {"_id": 0})], key=lambda d: d["k"])
        actual = sorted([d async for d in merged.find({}, {"_id": 0})], key=lambda d: d["k"])
        assert actual == expected
    finally:
        await one.drop()
        await merged.drop()


def test_a_key_that_is_not_an_equality_filter_is_refused() -> None:
    with pytest.raises(ValueError, match=r"accounts.*'\$or'"):
        Update("accounts", {"$or": [{"a": 1}]}, set={"x": 1})
    with pytest.raises(ValueError, match=r"'k' holds the operator expression"):
        Delete("accounts", {"k": {"$gt": 1}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        Update("accounts", {}, set={"x": 1})
