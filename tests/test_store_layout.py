"""The log in a database of its own (esmongo.store.layout, ADR 0017): where each collection
goes, the tools that find it there, and the transaction that spans both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient, InsertOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent
from esmongo.bank import Bank
from esmongo.bank.commands import ActivateAccount, CloseAccount, CreateAccount, CreditAccount
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.ops.backup import backup, restore
from esmongo.ops.check import check
from esmongo.ops.check.chain import verify_chain
from esmongo.store.collections import META
from esmongo.store.layout import (
    LayoutError,
    log_database,
    log_database_name,
    use_log_database,
)
from esmongo.store.transactions import run_in_transaction
from esmongo.store.unit_of_work import DocumentWrite


@pytest.fixture
async def other(client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    """A second database, dropped afterwards (a log database, or a restore's target)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield client.get_database(name, codec_options=CODEC_OPTIONS)
    finally:
        await client.drop_database(name)


async def _drop_log(db: AsyncDatabase[Document]) -> None:
    name = await log_database_name(db)
    if name != db.name:
        await db.client.drop_database(name)


async def test_a_transaction_across_two_databases_commits_and_aborts_whole(
    db: AsyncDatabase[Document], other: AsyncDatabase[Document]
) -> None:
    """The split layout's premise: an append inserts into the log database and takes the
    counter in the main one, atomically (MongoDB promises it on a replica set)."""
    await db["counters"].insert_one({"_id": "c", "value": 0})
    await other["events"].insert_one({"_id": 0})

    async def append(session: AsyncClientSession, *, fail: bool) -> None:
        await db["counters"].update_one({"_id": "c"}, {"$inc": {"value": 1}}, session=session)
        await other["events"].insert_one({"_id": 1}, session=session)
        # Seen from outside, neither write exists before the commit.
        assert (await db["counters"].find_one({"_id": "c"}) or {})["value"] == 0
        assert await other["events"].count_documents({}) == 1
        if fail:
            raise RuntimeError("abort")

    async def failing(session: AsyncClientSession) -> None:
        await append(session, fail=True)

    async def committing(session: AsyncClientSession) -> None:
        await append(session, fail=False)

    with pytest.raises(RuntimeError):
        await run_in_transaction(db.client, failing)
    assert (await db["counters"].find_one({"_id": "c"}) or {})["value"] == 0
    assert await other["events"].count_documents({}) == 1
    await run_in_transaction(db.client, committing)
    assert (await db["counters"].find_one({"_id": "c"}) or {})["value"] == 1
    assert await other["events"].count_documents({}) == 2


async def test_the_default_layout_is_one_database(db: AsyncDatabase[Document]) -> None:
    bank = await Bank(db).init()
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    assert (await log_database(db)) is db
    assert "db" not in (await db[META].find_one({"_id": "events_collection"}) or {})
    assert await db["events"].count_documents({}) == 1


async def test_a_split_deployment_keeps_only_inserts_in_its_log_database(
    db: AsyncDatabase[Document],
) -> None:
    log_name = f"{db.name}_log"
    try:
        await use_log_database(db, log_name)
        await use_log_database(db, log_name)  # idempotent
        bank = await Bank(db).init()
        for command in (
            CreateAccount("a1", "u1", "Ann", "EUR"),
            ActivateAccount("a1"),
            CloseAccount("a1"),
            CreateAccount("a2", "u2", "Bob", "EUR"),
        ):
            await bank.handle(command)
        await bank.archive_account("a1")
        log = db.client.get_database(log_name)
        assert set(await log.list_collection_names()) == {
            "events",
            "events_archive",
            "archived_streams",
        }
        main = set(await db.list_collection_names())
        assert {"events", "events_archive", "archived_streams"}.isdisjoint(main)
        assert {"counters", "esmongo_meta", "snapshots"} <= main
        assert await log["events"].count_documents({}) == 1
        assert await log["events_archive"].count_documents({}) == 3
        assert [e.sequence async for e in bank.store.read_all()] == [1, 2, 3, 4]
        assert [e.event_type async for e in bank.store.read_stream("account", "a1")] == [
            "account.created",
            "account.activated",
            "account.closed",
        ]

        report = await check(db, settle_s=0)
        assert report.ok, report.to_dict()
        chain = await verify_chain(db)
        assert chain.ok and chain.events == 4
    finally:
        await _drop_log(db)


async def test_a_one_database_deployment_moves_to_a_log_database_by_backup_and_restore(
    db: AsyncDatabase[Document], other: AsyncDatabase[Document], tmp_path: Path
) -> None:
    bank = await Bank(db).init()
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    await bank.handle(ActivateAccount("a1"))
    with pytest.raises(LayoutError, match="esmongo backup"):
        await use_log_database(db, f"{db.name}_log")
    made = await backup(db, tmp_path / "b")

    try:
        await use_log_database(other, f"{other.name}_log")
        await Bank(other).init()  # `esmongo init --log-db`, then `esmongo restore`
        restored = await restore(other, tmp_path / "b", erasures=[])
        assert restored.head_sequence == made.head_sequence == 2
        log = await log_database(other)
        assert log.name == f"{other.name}_log"
        assert await log["events"].count_documents({}) == 2
        assert await other["events"].count_documents({}) == 0
        moved = await Bank(other).init()
        await moved.handle(CreditAccount("a1", Decimal("5.00")))
        assert [e.sequence async for e in moved.store.read_all()] == [1, 2, 3]
        assert (await verify_chain(other)).ok

        split = await backup(other, tmp_path / "split")  # a split deployment backs up whole
        assert split.counts["events"] == 3 and split.head_sequence == 3
    finally:
        await _drop_log(other)


async def test_a_log_database_is_refused_where_it_cannot_be(db: AsyncDatabase[Document]) -> None:
    for bad, why in [
        (db.name, "must differ"),
        ("admin", "MongoDB's own"),
        ("a.b", "not a database name"),
        ("", "not a database name"),
    ]:
        with pytest.raises(LayoutError, match=why):
            await use_log_database(db, bad)
    try:
        await use_log_database(db, f"{db.name}_log")
        with pytest.raises(LayoutError, match="already"):
            await use_log_database(db, f"{db.name}_other")
        bank = await Bank(db).init()
        await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
        assert bank.store.events.database.name == f"{db.name}_log"
        assert await bank.store.events.count_documents({}) == 1
    finally:
        await _drop_log(db)


async def test_unit_of_work_writes_go_to_the_main_database_not_the_log(
    db: AsyncDatabase[Document], other: AsyncDatabase[Document]
) -> None:
    """What commits beside the events (idempotency records, tracking records, a unit of
    work's documents) is state: updated, expired, read from the main database. Written
    into the log database, the API missed its idempotency records there."""
    await use_log_database(db, other.name)
    store = await EventStore.open(db)
    await store.init()
    await store.append(
        "t", "a", [NewEvent("t.happened", {})], writes=[DocumentWrite("notes", InsertOne({"n": 1}))]
    )
    assert [d["n"] async for d in db["notes"].find({})] == [1]
    assert "notes" not in await other.list_collection_names()
    assert await other["events"].count_documents({}) == 1
