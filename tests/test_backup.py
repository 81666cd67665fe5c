"""The restore drill: back up a live bank, restore it elsewhere, check it is the same bank."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import WriteError
from typer.testing import CliRunner

from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount, TransferFunds
from esmongo.cli import app as cli_app
from esmongo.codec import CODEC_OPTIONS
from esmongo.errors import ConcurrencyError
from esmongo.events import NO_STREAM
from esmongo.ops.backup import BackupError, backup, restore
from esmongo.ops.migration import Migrator
from esmongo.store.event_store import EventStore
from esmongo.testing import new_events

Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def other_db(client: AsyncMongoClient[dict[str, Any]]) -> AsyncIterator[Db]:
    name = f"t_restore_{uuid.uuid4().hex[:8]}"
    yield client.get_database(name, codec_options=CODEC_OPTIONS)
    await client.drop_database(name)


async def fill(bank: Bank) -> None:
    for i in range(5):
        await bank.handle(CreateAccount(f"a{i}", f"u{i}", f"User {i}", "EUR"))
        await bank.handle(ActivateAccount(f"a{i}"))
        for n in range(1, 30):
            await bank.handle(CreditAccount(f"a{i}", Decimal(f"{n}.{i}5"), f"t{i}-{n}"))
    await bank.handle(TransferFunds("a0", "a1", Decimal("3.33"), "trf-1"))


async def test_restore_drill(db: Db, other_db: Db, tmp_path: Path) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    head = await bank.store.head_sequence()
    progress: list[tuple[str, int]] = []

    made = await backup(db, tmp_path, lambda name, n: progress.append((name, n)))
    assert made.head_sequence == head and made.counts["events"] == head
    assert ("events", head) in progress
    assert (tmp_path / db.name / "events.bson").exists()
    assert (tmp_path / db.name / "events.metadata.json").exists()

    restored = await restore(other_db, tmp_path, erasures=[])
    assert restored.head_sequence == head
    assert restored.events_checksum == made.events_checksum

    original = [e async for e in bank.store.read_all()]
    copy = await Bank(other_db).init()
    assert [e async for e in copy.store.read_all()] == original
    assert await copy.store.head_sequence() == head
    for i in range(5):
        before, after = await bank.accounts.load(f"a{i}"), await copy.accounts.load(f"a{i}")
        assert (after.balance, after.version) == (before.balance, before.version)
    index_names = {ix["name"] async for ix in await other_db["events"].list_indexes()}
    assert {"aggregate_ordering", "event_id", "global_sequence", "correlation"} <= index_names

    # The restored store goes on without a gap and still refuses duplicates.
    result = await copy.handle(CreditAccount("a2", Decimal("1.00"), "after-restore"))
    assert result.success and result.events[0].sequence == head + 1
    again = await copy.handle(CreditAccount("a2", Decimal("5.25"), "t2-5"))
    assert again.already_applied


async def test_after_a_migration_switch_the_active_log_is_backed_up(
    db: Db, other_db: Db, tmp_path: Path
) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    migrator = Migrator(db, [])
    await migrator.run("events_v2")
    await migrator.switch("events_v2")
    bank = await Bank(db).init()
    after = await bank.handle(CreditAccount("a3", Decimal("7.00"), "after-switch"))
    head = after.events[0].sequence

    made = await backup(db, tmp_path)
    assert made.head_sequence == head and made.counts["events_v2"] == head
    assert made.counts["events"] == head - 1  # the sealed originals, kept for audit

    await restore(other_db, tmp_path, erasures=[])
    copy = await Bank(other_db).init()
    assert copy.store.collection_name == "events_v2"
    assert [e async for e in copy.store.read_all()] == [e async for e in bank.store.read_all()]
    assert (await copy.accounts.load("a3")).balance == (await bank.accounts.load("a3")).balance
    with pytest.raises(WriteError):  # the restored originals are sealed again
        await other_db["events"].insert_one({"_id": -1})


async def test_restore_refuses_a_database_with_events(db: Db, tmp_path: Path) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    with pytest.raises(BackupError, match="already has events"):
        await restore(db, tmp_path, erasures=[])


async def test_a_store_running_across_a_restore_takes_no_head_it_wrote_on_trust(
    db: Db, tmp_path: Path
) -> None:
    """A restore sets the counter's `archives` back but moves its generation (`restores`):
    a store that remembers the head it wrote checks it again, and finds the restored one."""
    store = EventStore(db)
    await store.init()
    await store.append("t", "x", new_events(2), NO_STREAM)
    await backup(db, tmp_path)
    await store.append("t", "x", new_events(1), 2)
    await db["events"].delete_many({})  # the operator empties the log to restore it
    await restore(db, tmp_path, drop_state=True, erasures=[])
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("t", "x", new_events(1), 3)
    assert caught.value.actual == 2
    assert [e.aggregate_version async for e in store.read_stream("t", "x")] == [1, 2]


async def test_backup_refuses_a_used_directory(db: Db, tmp_path: Path) -> None:
    await Bank(db).init()
    await backup(db, tmp_path)
    with pytest.raises(BackupError, match="not empty"):
        await backup(db, tmp_path)


async def test_tampered_backup_is_refused(db: Db, other_db: Db, tmp_path: Path) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    events = tmp_path / db.name / "events.bson"
    data = bytearray(events.read_bytes())
    position = data.find(b"\x03\x00\x00\x00a3\x00")  # the BSON string "a3"
    data[position + 5 : position + 6] = b"9"  # one aggregate id changed: a3 -> a9
    events.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum"):
        await restore(other_db, tmp_path, erasures=[])


async def test_a_backup_with_an_edited_event_is_refused_by_the_chain(
    db: Db, other_db: Db, tmp_path: Path
) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    events = tmp_path / db.name / "events.bson"
    data = bytearray(events.read_bytes())
    position = data.find(b"User 3")  # an owner's name, which the checksum does not cover
    assert position > 0
    data[position : position + 6] = b"Mallet"
    events.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"chain is broken at #.*the event was edited"):
        await restore(other_db, tmp_path, erasures=[])


async def test_restore_keeps_entries_already_registered(
    db: Db, other_db: Db, tmp_path: Path
) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    await Bank(other_db).init()  # schemas registered, counter created, no events
    report = await restore(other_db, tmp_path, erasures=[])
    assert report.counts["events"] == await bank.store.head_sequence()
    assert report.counts["event_schemas"] == 0  # all already there
    assert await other_db["event_schemas"].count_documents({}) == len(bank.registry)


async def test_restore_refuses_a_database_holding_newer_state(db: Db, tmp_path: Path) -> None:
    """The events are gone but the snapshots, checkpoints and read models of a later day
    are not: loaded over the restored events, they would skip what happened since."""
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    await bank.handle(CreditAccount("a1", Decimal("1000.00"), "after-backup"))
    later = await bank.accounts.load("a1")
    await bank.snapshots.save("account", "a1", later.version, later.snapshot_state(), 1)
    await db["projection_checkpoints"].insert_one({"_id": "accounts", "position": 999})
    await db["accounts_read"].insert_one({"_id": "a1", "balance": later.balance})
    await db["events"].drop()

    with pytest.raises(BackupError) as refused:
        await restore(db, tmp_path, erasures=[])
    for name in ("snapshots (", "projection_checkpoints (1 documents)", "accounts_read (1"):
        assert name in str(refused.value)
    assert "event_schemas" not in str(refused.value)  # registrations merge, as before
    assert await db["events"].estimated_document_count() == 0  # nothing restored

    await restore(db, tmp_path, drop_state=True, erasures=[])
    for name in ("snapshots", "projection_checkpoints", "accounts_read"):
        assert await db[name].count_documents({}) == 0
    assert await db["event_schemas"].count_documents({}) == len(bank.registry)
    copy = await Bank(db).init()
    restored = await copy.accounts.load("a1")
    assert restored.version == later.version - 1
    assert restored.balance == later.balance - Decimal("1000.00")


async def test_cli_restore_names_the_state_and_drops_it_when_told(
    db: Db, other_db: Db, tmp_path: Path, server_uri: str
) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await backup(db, tmp_path)
    await other_db["dead_letters"].insert_one({"_id": "x", "projection": "accounts"})
    erasure_log = tmp_path.parent / f"{tmp_path.name}-erasures.jsonl"
    erasure_log.touch()  # nobody was forgotten: an empty log
    env = {
        **os.environ,
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": other_db.name,
        "ESMONGO_ERASURE_LOG": str(erasure_log),
    }

    def restore_cli(*args: str) -> Any:
        return CliRunner().invoke(cli_app, ["restore", *args, str(tmp_path)], env=env)

    refused = await asyncio.to_thread(restore_cli)
    assert refused.exit_code == 1
    assert "dead_letters (1 documents)" in refused.output and "--drop-state" in refused.output
    restored = await asyncio.to_thread(restore_cli, "--drop-state")
    assert restored.exit_code == 0, restored.output
    assert await other_db["dead_letters"].count_documents({}) == 0
    assert await other_db["events"].count_documents({}) == await bank.store.head_sequence()


async def test_application_collections_are_kept_only_when_named(
    db: Db, other_db: Db, tmp_path: Path
) -> None:
    """The backup knows the store's collections; the application names its own (`keep`)."""
    bank = await Bank(db).init()
    await fill(bank)
    await db["api_keys"].insert_one({"_id": "hash-1", "userId": "bob", "role": "teller"})

    await backup(db, tmp_path / "plain")
    assert not (tmp_path / "plain" / db.name / "api_keys.bson").exists()

    made = await backup(db, tmp_path / "kept", keep=["api_keys"])
    assert made.counts["api_keys"] == 1
    manifest = json.loads((tmp_path / "kept" / db.name / "esmongo-backup.json").read_text())
    assert manifest["kept"] == ["api_keys"]

    # The manifest names it: restored, and a key already there is merged, not refused as state.
    await other_db["api_keys"].insert_one({"_id": "hash-0", "userId": "ann", "role": "admin"})
    restored = await restore(other_db, tmp_path / "kept", erasures=[])
    assert restored.counts["api_keys"] == 1
    assert await other_db["api_keys"].count_documents({}) == 2

    with pytest.raises(BackupError, match="esmongo's own"):
        await backup(db, tmp_path / "wrong", keep=["counters"])
    assert not (tmp_path / "wrong").exists()


async def test_cli_backup_keeps_the_api_keys(db: Db, tmp_path: Path, server_uri: str) -> None:
    bank = await Bank(db).init()
    await fill(bank)
    await db["api_keys"].insert_one({"_id": "hash-1", "userId": "bob", "role": "teller"})
    env = {
        **os.environ,
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": db.name,
        "ESMONGO_ERASURE_LOG": str(tmp_path / "erasures.jsonl"),  # made here, not in the cwd
    }
    made = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["backup", str(tmp_path / "b")], env=env
    )
    assert made.exit_code == 0, made.output
    assert (tmp_path / "b" / db.name / "api_keys.bson").stat().st_size > 0
