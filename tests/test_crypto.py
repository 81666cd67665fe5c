"""Crypto-shredding on the store: personal fields stored encrypted, read in clear, forgotten
with their subject's key, while the events, the chain and everything else stay."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient, InsertOne
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import EventStore, NewEvent
from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount
from esmongo.bank.account import Account
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.errors import (
    EventValidationError,
    MasterKeyError,
    SchemaError,
    UnknownSubjectError,
)
from esmongo.model.temporal import TemporalQueries
from esmongo.ops.audit import AUDIT_STREAM, Actor
from esmongo.ops.backup import backup, restore
from esmongo.ops.check.chain import verify_chain
from esmongo.ops.erasures import ErasureLogError, forget
from esmongo.ops.erasures import read as read_log
from esmongo.ops.schema_check import sync
from esmongo.schema.catalog import SchemaCatalog
from esmongo.schema.registry import EventSchema, SchemaRegistry, validated_part
from esmongo.store import DocumentWrite
from esmongo.store.data_keys import MASTER_KEY_ENV, DataKeys, MasterKeys, new_master_key
from esmongo.store.personal import REDACTED, is_sealed

Db = AsyncDatabase[Document]

KEY = new_master_key()
OTHER = new_master_key().replace("mk-", "mk2-", 1)

OPENED = EventSchema(
    "opened",
    "1.0",
    {
        "type": "object",
        "required": ["ownerId", "ownerName"],
        "properties": {
            "ownerId": {"type": "string"},
            "ownerName": {"type": "string", "maxLength": 20, "x-personal": {"subject": "ownerId"}},
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string", "x-personal": True}},
            },
            "currency": {"type": "string"},
        },
    },
)
META = {"userId": "teller7", "userName": "Tess Teller", "ipAddress": "10.1.2.3", "userAgent": "ua"}
ALICE = {"ownerId": "alice", "ownerName": "Alice Smith", "address": {"street": "1 Elm St"}}


def make_store(db: Db, master: str | None = KEY, cache_seconds: float = 10.0) -> EventStore:
    keys = DataKeys(db, MasterKeys.parse(master) if master else None, cache_seconds=cache_seconds)
    return EventStore(db, registry=SchemaRegistry([OPENED]), keys=keys)


async def opened(store: EventStore, account: str = "a1", data: dict[str, Any] = ALICE) -> None:
    event = NewEvent("opened", {**data, "currency": "EUR"}, metadata=META)
    await store.append("Account", account, [event])


async def test_personal_fields_are_stored_encrypted_and_read_in_clear(db: Db) -> None:
    store = make_store(db)
    await store.init()
    event = NewEvent("opened", {**ALICE, "currency": "EUR"}, metadata=META)
    (recorded,) = await store.append("Account", "a1", [event])
    assert recorded.data == {**ALICE, "currency": "EUR"}  # the append answers in clear
    assert recorded.metadata["ipAddress"] == "10.1.2.3"

    raw = await db.events.find_one({"_id": 1})
    assert raw is not None
    stored = bson.encode(raw)
    for secret in (b"Alice Smith", b"1 Elm St", b"Tess Teller", b"10.1.2.3"):
        assert secret not in stored
    assert is_sealed(raw["data"]["ownerName"]) and is_sealed(raw["data"]["address"]["street"])
    assert {"ipAddress", "userAgent", "userName"} <= {
        k for k, v in raw["metadata"].items() if is_sealed(v)
    }
    assert raw["data"]["ownerId"] == "alice" and raw["data"]["currency"] == "EUR"
    # The owner's name is the owner's; the metadata is the teller's.
    keys = {d["subject"]: d["_id"] async for d in db.esmongo_data_keys.find()}
    assert set(keys) == {"user:alice", "Account/a1", "user:teller7"}
    assert raw["data"]["ownerName"]["key"] == keys["user:alice"]
    assert raw["data"]["address"]["street"]["key"] == keys["Account/a1"]
    assert raw["metadata"]["userName"]["key"] == keys["user:teller7"]

    fresh = make_store(db)  # another process: nothing cached
    (streamed,) = [e async for e in fresh.read_stream("Account", "a1")]
    (in_order,) = [e async for e in fresh.read_all()]
    for read in (
        streamed,
        in_order,
        await fresh.event_at(1),
        await fresh.find_event(event.event_id),
    ):
        assert read is not None
        assert read.data == {**ALICE, "currency": "EUR"}
        assert read.metadata["userName"] == "Tess Teller"
        assert read.metadata["userAgent"] == "ua"
    assert (await verify_chain(db)).ok


async def test_the_clear_value_is_validated_and_nothing_is_written_when_invalid(db: Db) -> None:
    store = make_store(db)
    await store.init()
    too_long = {**ALICE, "ownerName": "x" * 21}
    with pytest.raises(EventValidationError, match="ownerName"):
        await opened(store, data=too_long)
    assert await db.events.count_documents({}) == 0
    assert await db.esmongo_data_keys.count_documents({}) == 0


async def test_an_idempotent_retry_and_unit_of_work_writes_see_clear_values(db: Db) -> None:
    store = make_store(db)
    await store.init()
    event = NewEvent("opened", {**ALICE, "currency": "EUR"}, metadata=META)
    seen: list[Any] = []

    def writes(recorded: list[list[Any]]) -> list[DocumentWrite]:
        seen.append(recorded[0][0].data["ownerName"])
        return [DocumentWrite("names", InsertOne({"name": recorded[0][0].data["ownerName"]}))]

    await store.append("Account", "a1", [event], writes=writes)
    assert seen == ["Alice Smith"]
    assert await db.names.find_one({}, {"_id": 0}) == {"name": "Alice Smith"}
    (again,) = await make_store(db).append("Account", "a1", [event])
    assert again.replayed and again.data["ownerName"] == "Alice Smith"


async def test_forget_redacts_the_subject_everywhere_and_keeps_the_rest(
    db: Db, tmp_path: Path
) -> None:
    store = make_store(db)
    await store.init()
    await opened(store, "a1")
    await opened(store, "a2", {"ownerId": "bob", "ownerName": "Bob Jones"})
    log = tmp_path / "erasures.jsonl"
    actor = Actor("ops@host", "ops", "cli")

    done = await forget(store, "user:alice", actor, reason="GDPR request 17", log=log)
    assert len(done.erasure.keys) == 1 and not done.erasure.already

    for reader in (store, make_store(db)):
        a1, a2 = [e async for e in reader.read_all()][:2]
        assert a1.data["ownerName"] == REDACTED
        assert a1.data["ownerId"] == "alice" and a1.data["currency"] == "EUR"
        assert a1.data["address"]["street"] == "1 Elm St"  # the account's, not alice's
        assert a1.metadata["userName"] == "Tess Teller"  # the teller's
        assert a2.data["ownerName"] == "Bob Jones"
    assert (await verify_chain(db)).ok

    audit = [e async for e in store.read_stream(*_audit())]
    assert [e.event_type for e in audit] == ["DataSubjectForgotten"]
    assert audit[0].data["reason"] == "GDPR request 17"
    assert audit[0].data["details"] == {
        "subject": "user:alice",
        "keysDeleted": 1,
        "already": False,
        "snapshotsDropped": 1,  # a1, the stream holding alice's name
    }
    assert audit[0].data["by"]["userName"] == "ops"
    stored = bson.encode(await db.events.find_one({"eventType": "DataSubjectForgotten"}) or {})
    assert b"Alice" not in stored
    assert log.read_text().count("user:alice") == 1

    again = await forget(store, "user:alice", actor, reason=None, log=log)
    assert again.erasure.already and log.read_text().count("user:alice") == 1
    with pytest.raises(UnknownSubjectError, match="user:nobody"):
        await forget(store, "user:nobody", actor, reason=None, log=log)
    assert len([e async for e in store.read_stream(*_audit())]) == 2


async def test_a_forget_reaches_other_processes_when_their_cache_expires(
    db: Db, tmp_path: Path
) -> None:
    store = make_store(db)
    await store.init()
    await opened(store)
    other = make_store(db, cache_seconds=0.0)
    assert (await other.event_at(1)).data["ownerName"] == "Alice Smith"  # type: ignore[union-attr]
    await forget(store, "user:alice", Actor("u", "u", "cli"), reason=None, log=tmp_path / "l")
    assert (await other.event_at(1)).data["ownerName"] == REDACTED  # type: ignore[union-attr]


async def test_a_forgotten_subject_gets_a_new_key_for_new_data(db: Db, tmp_path: Path) -> None:
    store = make_store(db)
    await store.init()
    await opened(store, "a1")
    await forget(store, "user:alice", Actor("u", "u", "cli"), reason=None, log=tmp_path / "l")
    await opened(store, "a2")
    a1, a2 = [e async for e in store.read_all(event_types=["opened"])]
    assert (a1.data["ownerName"], a2.data["ownerName"]) == (REDACTED, "Alice Smith")


async def test_a_missing_or_wrong_master_key_is_a_clear_error(db: Db) -> None:
    store = make_store(db)
    await store.init()
    await opened(store)
    without = make_store(db, master=None)
    with pytest.raises(MasterKeyError, match="ESMONGO_MASTER_KEY is not set"):
        await without.event_at(1)
    with pytest.raises(MasterKeyError, match="ESMONGO_MASTER_KEY is not set"):
        await opened(without, "a2")  # no personal data in clear beside encrypted data
    assert await db.events.count_documents({}) == 1

    wrong_id = make_store(db, master=OTHER)
    with pytest.raises(MasterKeyError, match="does not hold"):
        await wrong_id.event_at(1)
    same_id_other_key = KEY.split(":")[0] + ":" + OTHER.split(":")[1]
    with pytest.raises(MasterKeyError, match="does not open data key"):
        await make_store(db, master=same_id_other_key).event_at(1)
    for bad, says in [("nocolon", "must be 'id:base64-key'"), ("k:c2hvcnQ", "not 32")]:
        with pytest.raises(MasterKeyError, match=says):
            MasterKeys.parse(bad)


async def test_without_a_master_key_a_database_that_never_encrypted_stays_clear(db: Db) -> None:
    store = make_store(db, master=None)
    await store.init()
    await opened(store)
    raw = await db.events.find_one({"_id": 1})
    assert raw is not None and raw["data"]["ownerName"] == "Alice Smith"


async def test_without_a_master_key_appends_do_not_ask_for_data_keys_each_time(
    counted: tuple[FindCounter, Db],
) -> None:
    """The no-key path asks whether the database ever encrypted once per CACHE_SECONDS, not
    on every append (it did: two reads per append, seen in bench_crypto.py)."""
    listener, db = counted
    store = make_store(db, master=None)
    await store.init()
    for n in range(5):
        await opened(store, f"a{n}")
    asked = [f for f in listener.filters if f == {}]  # find_one({}) on keys, then erasures
    assert len(asked) == 2


async def test_a_replay_reads_the_keys_of_a_batch_of_events_at_once(
    db: Db, counted: tuple[FindCounter, Db]
) -> None:
    """Not one read per subject: a rebuild over many people would be a round trip each."""
    store = make_store(db)
    await store.init()
    for n in range(30):
        await opened(store, f"a{n}", {"ownerId": f"owner{n}", "ownerName": f"Owner {n}"})
    listener, same_db = counted
    fresh = make_store(same_db)  # nothing cached
    names = [e.data["ownerName"] async for e in fresh.read_all()]
    assert names == [f"Owner {n}" for n in range(30)]
    key_reads = [f for f in listener.filters if "dk_" in str(f)]  # reads of data keys by id
    assert len(key_reads) == 1  # 30 owners and the teller: one read, not 31


async def test_rotating_the_master_key_rewraps_every_data_key(db: Db) -> None:
    store = make_store(db)
    await store.init()
    await opened(store, "a1")
    await opened(store, "a2", {"ownerId": "bob", "ownerName": "Bob Jones"})
    both = make_store(db, master=f"{OTHER},{KEY}")  # the new key first, the old still opens
    assert (await both.event_at(2)).data["ownerName"] == "Bob Jones"  # type: ignore[union-attr]
    assert await both.keys.rewrap() == (4, 0)  # alice, bob, the teller, Account/a1
    assert await both.keys.rewrap() == (0, 4)
    masters = {d["master"] async for d in db.esmongo_data_keys.find()}
    assert masters == {OTHER.split(":")[0]}
    only_new = make_store(db, master=OTHER)
    assert (await only_new.event_at(1)).data["ownerName"] == "Alice Smith"  # type: ignore[union-attr]
    with pytest.raises(MasterKeyError, match="does not hold"):
        await make_store(db, master=KEY).event_at(1)


def _audit() -> tuple[str, str]:
    return AUDIT_STREAM.aggregate_type, AUDIT_STREAM.aggregate_id


@pytest.fixture
async def other_db(client: AsyncMongoClient[Document]) -> AsyncIterator[Db]:
    name = f"t_restore_{uuid.uuid4().hex[:8]}"
    yield client.get_database(name, codec_options=CODEC_OPTIONS)
    await client.drop_database(name)


async def alices_account(db: Db, monkeypatch: pytest.MonkeyPatch) -> Bank:
    """The bank (keys from the environment, as a deployment has them), snapshots every 2."""
    monkeypatch.setenv(MASTER_KEY_ENV, KEY)
    bank = await Bank(db, snapshot_every=2).init()
    await bank.handle(CreateAccount("a1", "alice", "Alice Smith", "EUR"))
    await bank.handle(ActivateAccount("a1"))
    for n in range(1, 4):
        await bank.handle(CreditAccount("a1", Decimal("10.00"), f"t{n}"))
    await bank.close()  # the snapshots written in the background
    return bank


async def test_forget_drops_the_snapshots_that_cached_the_clear_state(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await alices_account(db, monkeypatch)
    assert await db.snapshots.count_documents({}) == 1
    assert b"Alice Smith" in bson.encode(
        await db.snapshots.find_one({}) or {}, codec_options=CODEC_OPTIONS
    )
    await forget(bank.store, "user:alice", Actor("u", "u", "cli"), reason=None, log=tmp_path / "l")
    assert await db.snapshots.count_documents({}) == 0
    assert await db.snapshot_history.count_documents({}) == 0

    fresh = await Bank(db, snapshot_every=2).init()
    account = await fresh.accounts.load("a1")
    assert (account.owner_name, account.balance) == (REDACTED, Decimal("30.00"))
    past = TemporalQueries(fresh.store, Account, snapshots=fresh.snapshots)
    then = await past.state_at("a1", version=4)
    assert then is not None and (then.owner_name, then.balance) == (REDACTED, Decimal("20.00"))


async def test_a_restored_backup_does_not_bring_a_forgotten_key_back(
    db: Db, other_db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await alices_account(db, monkeypatch)
    await bank.handle(CreateAccount("b1", "bob", "Bob Jones", "EUR"))
    await backup(db, tmp_path / "before")  # holds alice's key
    log = tmp_path / "erasures.jsonl"
    await forget(bank.store, "user:alice", Actor("u", "u", "cli"), reason=None, log=log)
    await backup(db, tmp_path / "after")  # holds the erasure in esmongo_erasures

    for made, erasures in (("before", read_log(log)), ("after", [])):
        name = f"{other_db.name}_{made}"
        target = other_db.client.get_database(name, codec_options=CODEC_OPTIONS)
        try:
            report = await restore(target, tmp_path / made, erasures=erasures)
            assert report.keys_erased == (1 if made == "before" else 0)
            keys = {d["subject"] async for d in target.esmongo_data_keys.find()}
            assert "user:alice" not in keys and "user:bob" in keys
            assert [e.subject for e in await DataKeys(target, None).logged()] == ["user:alice"]
            restored = await Bank(target).init()
            (opened_a1, opened_b1) = [
                e async for e in restored.store.read_all(event_types=["account.created"])
            ]
            assert opened_a1.data["ownerName"] == REDACTED
            assert opened_b1.data["ownerName"] == "Bob Jones"
            assert (await verify_chain(target)).ok
        finally:
            await other_db.client.drop_database(target.name)


def test_a_restore_needs_the_erasure_log(tmp_path: Path) -> None:
    with pytest.raises(ErasureLogError, match="no erasure log at"):
        read_log(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    line = '{"subject": "user:a", "keys": ["dk_1"], "at": "2026-01-01T00:00:00+00:00"}'
    broken.write_text(line + "\n{")
    with pytest.raises(ErasureLogError, match="line 2"):
        read_log(broken)


async def test_marking_a_field_personal_needs_no_new_schema_version(db: Db) -> None:
    """A database made before the annotation (the bank's account.created) takes it; a change
    of what is valid is still refused."""
    plain = EventSchema("opened", "1.0", validated_part(OPENED.schema))
    first = SchemaCatalog(db, SchemaRegistry())
    await first.init()
    assert await first.register(plain)
    later = SchemaCatalog(db, SchemaRegistry())
    assert not await later.register(OPENED)  # known, with an annotation more: taken
    stored = await db.event_schemas.find_one({"eventType": "opened"})
    assert stored is not None and stored["schema"] == dict(OPENED.schema)
    found = later.registry.get("opened", "1.0")
    assert found is not None and found.schema == dict(OPENED.schema)
    stricter = {**OPENED.schema, "required": ["ownerId", "ownerName", "currency"]}
    with pytest.raises(SchemaError, match="already registered with another JSON Schema"):
        await later.register(EventSchema("opened", "1.0", stricter))


async def test_schemas_sync_takes_an_annotation_as_an_update_not_drift(db: Db) -> None:
    catalog = SchemaCatalog(db, SchemaRegistry())
    await catalog.init()
    await catalog.register(EventSchema("opened", "1.0", validated_part(OPENED.schema)))
    report = await sync(catalog, [OPENED])
    assert (report.drift, [s.event_type for s in report.updated]) == ([], ["opened"])
    stored = await db.event_schemas.find_one({"eventType": "opened"})
    assert stored is not None and stored["schema"] == dict(OPENED.schema)


async def test_forgetting_again_writes_the_line_an_earlier_forget_could_not(
    db: Db, tmp_path: Path
) -> None:
    """The error says "forget the subject again to log it": that must log it."""
    store = make_store(db)
    await store.init()
    await opened(store)
    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    actor = Actor("u", "u", "cli")
    with pytest.raises(ErasureLogError, match="forget the subject again"):
        await forget(store, "user:alice", actor, reason=None, log=unwritable)
    assert (await store.event_at(1)).data["ownerName"] == REDACTED  # type: ignore[union-attr]
    log = tmp_path / "erasures.jsonl"
    again = await forget(store, "user:alice", actor, reason=None, log=log)
    assert again.erasure.already
    (line,) = read_log(log)
    assert line.subject == "user:alice" and len(line.keys) == 1
    await forget(store, "user:alice", actor, reason=None, log=log)
    assert len(read_log(log)) == 1  # once
