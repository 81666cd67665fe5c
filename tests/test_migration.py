"""Migrations that keep the originals: dry run, copy, resume, verify, switch, rollback."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter, examined
from esmongo import AppendRequest, EventStore, NewEvent, SchemaRegistry, Upcasters
from esmongo.codec import Document
from esmongo.errors import EventsCollectionSealed
from esmongo.ops.migration import (
    Migration,
    MigrationError,
    Migrator,
    active,
    active_events_collection,
    rollback_switch,
)
from esmongo.schema import EventSchema
from esmongo.store.chain import link, unchained


def to_v2(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """1.0 kept the amount as a string and had no currency."""
    if data.get("bad"):
        raise ValueError("cannot read this amount")
    return {"amount": Decimal(data["amount"]), "currency": data.get("currency", "USD")}


def to_v3(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"money": {"amount": data["amount"], "currency": data["currency"]}}


MIGRATIONS = [
    Migration("credited-2", "account.credited", "1.0", "2.0", to_v2),
    Migration("credited-3", "account.credited", "2.0", "3.0", to_v3),
]


def upcasters() -> Upcasters:
    """The same steps as upcasters: what reads of the source see must be what the target holds."""
    result = Upcasters()
    for m in MIGRATIONS:
        result.register(m.event_type, m.from_version, m.to_version, m.transform)
    return result


def stream_events(stream: int, round_: int, bad: frozenset[tuple[int, int]]) -> list[NewEvent]:
    if round_ == 0:
        return [NewEvent("account.created", {"owner": f"u{stream}"})]
    amount = f"{stream}.{round_:02d}"
    if (stream + round_) % 3 == 0:
        return [NewEvent("account.debited", {"amount": Decimal(amount)})]
    if stream % 4 == 0:  # written after the 2.0 release
        data: dict[str, Any] = {"amount": Decimal(amount), "currency": "EUR"}
        return [NewEvent("account.credited", data, event_version="2.0")]
    legacy: dict[str, Any] = {"amount": amount}
    if (stream, round_) in bad:  # only a legacy credit can be bad
        legacy["bad"] = True
    return [NewEvent("account.credited", legacy, metadata={"correlationId": f"c{stream}"})]


async def seed(
    db: AsyncDatabase[Document],
    streams: int,
    rounds: int,
    bad: frozenset[tuple[int, int]] = frozenset(),
) -> EventStore:
    """Streams written interleaved, one event each per transaction round."""
    for s, r in bad:
        assert stream_events(s, r, frozenset())[0].event_version == "1.0" and (s + r) % 3, (s, r)
    store = EventStore(db)
    await store.init()
    for round_ in range(rounds):
        await store.append_streams(
            [
                AppendRequest("account", f"a{s:03d}", stream_events(s, round_, bad))
                for s in range(streams)
            ]
        )
    return store


async def documents(db: AsyncDatabase[Document], name: str) -> list[Document]:
    return [d async for d in db[name].find({}, sort=[("sequence", 1)])]


def without_time(docs: list[Document]) -> list[Document]:
    """Documents with `migration.migratedAt` dropped: the one field two runs may differ in
    (with the chain's links, which cover it); the links are checked instead."""
    result = []
    previous = ""
    for doc in docs:
        assert doc["prev"] == previous and doc["hash"] == link(previous, doc)
        previous = doc["hash"]
        doc = unchained(doc) | {"sourceHash": doc.get("sourceHash")}
        if "migration" in doc:
            doc["migration"] = {k: v for k, v in doc["migration"].items() if k != "migratedAt"}
        result.append(doc)
    return result


async def test_dry_run_reports_what_would_change_and_writes_nothing(
    db: AsyncDatabase[Document],
) -> None:
    await seed(db, streams=8, rounds=6, bad=frozenset({(1, 3), (5, 3)}))
    before = await documents(db, "events")
    migrator = Migrator(db, MIGRATIONS)
    report = await migrator.dry_run(samples=2)
    counted: dict[tuple[str, str], int] = {}
    for doc in before:
        if doc["eventType"] == "account.credited":
            key = (doc["eventType"], doc["eventVersion"])
            counted[key] = counted.get(key, 0) + 1
    assert {(c.event_type, c.from_version): c.count for c in report.changes} == counted
    assert {c.to_version for c in report.changes} == {"3.0"}
    assert report.total == len(before) == 48
    assert report.would_change == sum(counted.values())
    assert [(f.event.aggregate_id, f.error) for f in report.failures] == [
        ("a001", "ValueError: cannot read this amount"),
        ("a005", "ValueError: cannot read this amount"),
    ]
    assert report.failure_count == 2
    sample = next(s for s in report.samples if s.event.event_version == "1.0")
    assert sample.after == {
        "money": {"amount": Decimal(sample.before["amount"]), "currency": "USD"}
    }
    assert await documents(db, "events") == before
    assert "events_v3" not in await db.list_collection_names()


async def test_copy_verify_switch_keeps_every_original(db: AsyncDatabase[Document]) -> None:
    store = await seed(db, streams=12, rounds=10)
    original = await documents(db, "events")
    upcast_reads = [e async for e in EventStore(db, upcasters=upcasters()).read_all()]
    migrator = Migrator(db, MIGRATIONS, batch_size=25)
    calls: list[tuple[int, int]] = []
    run = await migrator.run("events_v3", progress=lambda done, total: calls.append((done, total)))
    assert (run.copied, run.scanned, run.last_sequence, run.complete) == (120, 120, 120, True)
    assert run.transformed == sum(1 for d in original if d["eventType"] == "account.credited")
    assert calls[-1] == (120, 120) and calls == sorted(calls) and len(calls) >= 120 // 25

    verified = await migrator.verify("events_v3")
    assert verified.ok, verified.problems
    assert verified.source_checksum == verified.target_checksum
    assert await active_events_collection(db) == "events"  # verified is not switched
    await migrator.switch("events_v3")
    assert await active_events_collection(db) == "events_v3"

    assert await documents(db, "events") == original  # never rewritten, never lost
    copied = await documents(db, "events_v3")
    for before, after in zip(original, copied, strict=True):
        for field in ("_id", "sequence", "eventId", "aggregateId", "aggregateVersion"):
            assert before[field] == after[field]
        assert (before["metadata"], before["timestamp"]) == (after["metadata"], after["timestamp"])
        # The copy is chained anew; where its hash changed it records the original's.
        assert after.get("sourceHash", after["hash"]) == before["hash"]
        if before["eventType"] != "account.credited":
            assert unchained(after) == unchained(before)
        else:
            assert after["eventVersion"] == "3.0"
            assert after["migration"]["fromVersion"] == before["eventVersion"]
            expected = (
                ["credited-2", "credited-3"] if before["eventVersion"] == "1.0" else ["credited-3"]
            )
            assert after["migration"]["ids"] == expected

    migrated = EventStore(db, collection=await active_events_collection(db))
    assert [e async for e in migrated.read_all()] == [
        e.__class__(**{**e.__dict__, "upcast_from": None}) for e in upcast_reads
    ]  # the copy holds exactly what upcasting reads showed
    (appended,) = await migrated.append("account", "a000", [NewEvent("account.debited", {})])
    assert appended.sequence == 121
    with pytest.raises(
        EventsCollectionSealed, match="refuses writes"
    ):  # the old collection is sealed
        await store.append("account", "a001", [NewEvent("account.debited", {})])
    assert len(await documents(db, "events")) == 120
    with pytest.raises(MigrationError, match="lose"):
        await rollback_switch(db)


async def test_rollback_goes_back_while_nothing_new_was_written(
    db: AsyncDatabase[Document],
) -> None:
    store = await seed(db, streams=3, rounds=4)
    await Migrator(db, MIGRATIONS).switch("events_v3")
    assert await rollback_switch(db) == "events"
    assert await active_events_collection(db) == "events"
    await store.append("account", "a000", [NewEvent("account.debited", {})])  # unsealed
    with pytest.raises(EventsCollectionSealed, match="refuses writes"):
        await EventStore(db, collection="events_v3").append(
            "account", "a001", [NewEvent("account.debited", {})]
        )
    with pytest.raises(MigrationError, match="never switched"):
        await rollback_switch(db)


async def test_a_rollback_reads_the_heads_below_the_log_head_not_whole_collections(
    counted: tuple[FindCounter, AsyncDatabase[Document]],
    db: AsyncDatabase[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rollback compares the two collections' heads with the write fence closed. It asked
    each for its highest sequence (`find_one` sorted backward), which reads every event on
    the embedded server: 22 s per collection at a million events, appends fenced out
    meanwhile. Each command it sends is explained again: only the ranges below the head."""
    monkeypatch.setattr(active, "HEAD_WINDOW", 2)
    listener, watched = counted
    await seed(db, streams=3, rounds=4)
    await Migrator(db, MIGRATIONS).switch("events_v3")
    listener.sent.clear()
    assert await rollback_switch(watched) == "events"
    assert await examined(db, listener.sent, {"events", "events_v3"}) == 2 * 2


class Crash(BaseException):
    """A process dying mid-run: not an Exception, so no failure handling catches it."""


class Reference(list[Document]):
    """The dataset migrated in one uninterrupted run (short repr for hypothesis reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} migrated documents>"

    @property
    def legacy(self) -> int:
        """How many events went through the first step."""
        return sum(1 for d in self if d.get("migration", {}).get("fromVersion") == "1.0")


@pytest.fixture
async def reference(db: AsyncDatabase[Document]) -> Reference:
    await seed(db, streams=8, rounds=10)
    await Migrator(db, MIGRATIONS).run("reference")
    return Reference(without_time(await documents(db, "reference")))


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch_size=st.sampled_from([1, 7, 50, 1000]),
    crash_at=st.integers(1, 80),
    how=st.sampled_from(["progress", "transform", "torn_insert"]),
)
async def test_an_interrupted_run_resumes_to_the_same_result(
    db: AsyncDatabase[Document], reference: Reference, batch_size: int, crash_at: int, how: str
) -> None:
    target = "resumed"  # emptied, not dropped, between examples: drops are slow on SecantusDB
    await db[target].delete_many({})
    await db["esmongo_migrations"].delete_one({"_id": target})
    seen = 0

    def crashing(data: Mapping[str, Any]) -> Mapping[str, Any]:
        nonlocal seen
        seen += 1
        if seen == crash_at:
            raise Crash
        return to_v2(data)

    def progress(done: int, total: int) -> None:
        if done >= crash_at:
            raise Crash

    if how == "transform":
        crash_at = 1 + crash_at % reference.legacy  # the n-th event the first step transforms
        first = Migrator(
            db,
            [
                MIGRATIONS[0].__class__(**{**MIGRATIONS[0].__dict__, "transform": crashing}),
                MIGRATIONS[1],
            ],
            batch_size=batch_size,
        )
        with pytest.raises(Crash):
            await first.run(target)
    elif how == "progress":
        with pytest.raises(Crash):
            await Migrator(db, MIGRATIONS, batch_size=batch_size).run(target, progress=progress)
    else:  # an insert_many cut short: more than the run's checkpoint, less than the batch
        await Migrator(db, MIGRATIONS, batch_size=batch_size).run(target)
        await db[target].delete_many({"sequence": {"$gt": crash_at}})
        checkpoint = crash_at // batch_size * batch_size
        await db["esmongo_migrations"].update_one(
            {"_id": target}, {"$set": {"lastSequence": checkpoint, "status": "running"}}
        )
    partial = await documents(db, target)
    assert [d["sequence"] for d in partial] == list(range(1, len(partial) + 1))

    migrator = Migrator(db, MIGRATIONS, batch_size=batch_size)
    run = await migrator.run(target)
    assert run.resumed_after == len(partial)
    assert run.copied == 80 - len(partial)
    assert without_time(await documents(db, target)) == reference
    assert (await migrator.verify(target)).ok


async def test_a_target_that_lost_what_its_checkpoint_names_resumes_from_what_it_holds(
    db: AsyncDatabase[Document], reference: Reference
) -> None:
    await Migrator(db, MIGRATIONS).run("lost")
    await db["lost"].delete_many({"sequence": {"$gt": 50}})  # a restore of an older copy
    await db["esmongo_migrations"].update_one(
        {"_id": "lost"}, {"$set": {"lastSequence": 70, "status": "running"}}
    )
    migrator = Migrator(db, MIGRATIONS)
    run = await migrator.run("lost")
    assert (run.resumed_after, run.copied) == (50, 30)
    assert without_time(await documents(db, "lost")) == reference


async def test_every_failure_is_listed_and_stops_the_switch(db: AsyncDatabase[Document]) -> None:
    bad = frozenset({(1, 3), (6, 5), (9, 7)})
    store = await seed(db, streams=10, rounds=8, bad=bad)
    migrator = Migrator(db, MIGRATIONS, batch_size=10, max_listed=2)
    run = await migrator.run("events_v3")
    assert not run.complete
    assert (run.failure_count, len(run.failures)) == (3, 2)  # the report lists the first 2
    kept = [d async for d in db["esmongo_migration_failures"].find({}, sort=[("sequence", 1)])]
    failed = [(d["aggregate_id"], d["aggregate_version"]) for d in kept]  # ... and keeps all
    assert failed == [(f"a{s:03d}", r + 1) for s, r in sorted(bad, key=lambda b: (b[1], b[0]))]
    assert {d["error"] for d in kept} == {"ValueError: cannot read this amount"}
    assert [f.event.sequence for f in run.failures] == [d["sequence"] for d in kept[:2]]
    first_bad = run.failures[0].event.sequence
    copied = await documents(db, "events_v3")
    assert [d["sequence"] for d in copied] == list(range(1, first_bad))  # a gap-free prefix
    assert run.scanned == 80  # the scan went on to find every failure

    with pytest.raises(MigrationError, match="failed on 3 event"):
        await migrator.switch("events_v3")
    assert await active_events_collection(db) == "events"
    await store.append("account", "a000", [NewEvent("account.debited", {})])  # not sealed

    def fixed(data: Mapping[str, Any]) -> Mapping[str, Any]:
        return to_v2({k: v for k, v in data.items() if k != "bad"})

    repaired = Migrator(
        db, [Migration("credited-2", "account.credited", "1.0", "2.0", fixed), MIGRATIONS[1]]
    )
    resumed = await repaired.run("events_v3")
    assert resumed.complete and resumed.resumed_after == first_bad - 1
    assert await db["esmongo_migration_failures"].count_documents({}) == 0
    await repaired.switch("events_v3")
    assert await active_events_collection(db) == "events_v3"
    assert len(await documents(db, "events_v3")) == 81


async def test_output_invalid_for_the_new_schema_is_a_failure(db: AsyncDatabase[Document]) -> None:
    await seed(db, streams=2, rounds=3)
    registry = SchemaRegistry(
        [
            EventSchema(
                "account.credited",
                "3.0",
                {"type": "object", "required": ["money", "transactionId"]},
            )
        ]
    )
    run = await Migrator(db, MIGRATIONS, registry=registry).run("events_v3")
    assert run.failure_count == 3  # every credit: two at 2.0, one at 1.0
    assert "'transactionId' is a required property" in run.failures[0].error


TAMPERING: dict[str, tuple[Document, Document]] = {
    "deleted": ({}, {}),
    "event id": ({"$set": {"eventId": "evt_forged"}}, {}),
    "stream version": ({"$set": {"aggregateVersion": 99}}, {}),
    "untouched data": ({"$set": {"data.amount": "0"}}, {"eventType": "account.debited"}),
    "metadata": ({"$set": {"metadata.userId": "mallory"}}, {"eventVersion": "3.0"}),
    "migration record": ({"$set": {"migration.ids": ["other"]}}, {"eventVersion": "3.0"}),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
async def test_a_copy_that_fails_verification_is_not_switched_to(
    db: AsyncDatabase[Document], tampering: str
) -> None:
    store = await seed(db, streams=4, rounds=5)
    migrator = Migrator(db, MIGRATIONS)
    await migrator.run("events_v3")
    assert (await migrator.verify("events_v3")).ok
    update, where = TAMPERING[tampering]
    victim = await db["events_v3"].find_one(
        {"sequence": {"$gte": 7}, **where}, sort=[("sequence", 1)]
    )
    assert victim is not None
    if tampering == "deleted":
        await db["events_v3"].delete_one({"_id": victim["_id"]})
    else:
        await db["events_v3"].update_one({"_id": victim["_id"]}, update)

    report = await migrator.verify("events_v3")
    assert not report.ok and report.problem_count >= 1
    assert any(f"#{victim['sequence']}" in p for p in report.problems), report.problems
    with pytest.raises(MigrationError, match="verification"):
        await migrator.switch("events_v3", catch_up=False)
    assert await active_events_collection(db) == "events"
    await store.append("account", "a000", [NewEvent("account.debited", {})])  # unsealed again


async def test_a_target_must_be_a_new_collection_of_this_migration(
    db: AsyncDatabase[Document],
) -> None:
    await seed(db, streams=2, rounds=2)
    await db["taken"].insert_one({"_id": 1, "sequence": 1})
    with pytest.raises(MigrationError, match="no migration wrote"):
        await Migrator(db, MIGRATIONS).run("taken")
    with pytest.raises(MigrationError, match="not the source"):
        await Migrator(db, MIGRATIONS).run("events")
    await Migrator(db, MIGRATIONS[:1]).run("events_v2")
    with pytest.raises(MigrationError, match="same source and migrations"):
        await Migrator(db, MIGRATIONS).run("events_v2")
    with pytest.raises(ValueError, match="loop"):
        Migrator(db, [*MIGRATIONS, Migration("back", "account.credited", "3.0", "1.0", to_v2)])


async def test_a_tail_only_switch_checks_what_came_after_the_full_verification(
    db: AsyncDatabase[Document],
) -> None:
    store = await seed(db, streams=5, rounds=6)
    migrator = Migrator(db, MIGRATIONS, batch_size=8)
    with pytest.raises(MigrationError, match="no passed full verification"):
        await migrator.switch("events_v3", tail_only=True)
    await migrator.run("events_v3")
    assert (await migrator.verify("events_v3")).ok
    for i in range(3):  # writers went on after the verification
        await store.append("account", f"a00{i}", [NewEvent("account.credited", {"amount": "1"})])
    await db["events_v3"].delete_one({"sequence": 4})  # the prefix lost an event
    with pytest.raises(MigrationError, match="up to #30"):
        await migrator.switch("events_v3", tail_only=True)
    await store.append("account", "a004", [NewEvent("account.debited", {})])  # unsealed again

    await db["events_v3"].drop()
    await db["esmongo_migrations"].delete_one({"_id": "events_v3"})
    await migrator.run("events_v3")
    assert (await migrator.verify("events_v3")).ok
    await store.append("account", "a001", [NewEvent("account.credited", {"amount": "2"})])
    report = await migrator.switch("events_v3", tail_only=True)
    assert (report.verified_from, report.source_count, report.transformed) == (35, 1, 1)
    assert await active_events_collection(db) == "events_v3"
    copied = await documents(db, "events_v3")
    assert [d["sequence"] for d in copied] == list(range(1, 36))
    assert copied[-1]["data"] == {"money": {"amount": Decimal("2"), "currency": "USD"}}
