"""The tamper-evident chain: every way of rewriting history is found at the right sequence;
archives, backups, migrations and concurrent writers keep the chain intact."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cli_helpers import esmongo
from esmongo import EventStore, NewEvent
from esmongo.codec import Document
from esmongo.ops.backup import backup, restore
from esmongo.ops.check import check
from esmongo.ops.check.chain import parse_anchor, verify_chain
from esmongo.ops.migration import Migration, Migrator
from esmongo.store.chain import HASH, PREV, SOURCE_HASH, link

Db = AsyncDatabase[Document]


async def filled(db: Db, streams: int = 5, rounds: int = 4) -> EventStore:
    """Events of several streams, interleaved, several per transaction."""
    store = EventStore(db)
    await store.init()
    for round_ in range(rounds):
        await asyncio.gather(
            *(
                store.append("acc", f"a{s}", [NewEvent("credited", {"n": round_, "s": s})])
                for s in range(streams)
            )
        )
    return store


async def first_broken(db: Db) -> tuple[int | None, list[str]]:
    report = await verify_chain(db)
    return report.first_broken, [b.kind for b in report.breaks]


async def test_an_untouched_log_verifies_and_names_its_head(db: Db) -> None:
    await filled(db)
    report = await verify_chain(db)
    assert report.ok and report.events == report.chained == 20
    last = await db.events.find_one({"_id": 20})
    assert last is not None and (report.head, report.head_hash) == (20, last[HASH])
    prev = await db.events.find_one({"_id": 19})
    assert prev is not None and last[PREV] == prev[HASH]


async def test_writers_in_two_processes_link_to_each_other(db: Db) -> None:
    """Each store links to its own last commit from memory; after the other's, it reads."""
    one, two = await filled(db, 1, 1), EventStore(db)
    for i in range(6):
        writer = one if i % 2 else two
        await writer.append("acc", f"p{i % 3}", [NewEvent("credited", {"i": i})])
    assert (await verify_chain(db)).ok


@pytest.mark.parametrize(
    ("change", "field"),
    [({"$set": {"data.n": 99}}, "data"), ({"$set": {"metadata.userId": "mallory"}}, "metadata")],
)
async def test_an_edited_event_breaks_the_chain_at_its_sequence(
    db: Db, change: Document, field: str
) -> None:
    await filled(db)
    await db.events.update_one({"_id": 7}, change)
    assert await first_broken(db) == (7, ["edited"])


async def test_swapping_two_events_is_found_at_the_first(db: Db) -> None:
    await filled(db)
    a, b = [await db.events.find_one({"_id": n}) for n in (8, 9)]
    assert a is not None and b is not None
    await db.events.delete_many({"_id": {"$in": [8, 9]}})
    await db.events.insert_many([b | {"_id": 8, "sequence": 8}, a | {"_id": 9, "sequence": 9}])
    broken, kinds = await first_broken(db)
    assert broken == 8 and kinds[0] == "edited"


async def test_a_removed_event_is_found_at_its_sequence(db: Db) -> None:
    await filled(db)
    await db.events.delete_one({"_id": 11})
    assert await first_broken(db) == (11, ["missing"])
    report = await check(db, settle_s=0)
    assert {f.invariant for f in report.findings} == {"sequence", "streams"}  # not twice


async def test_a_rehashed_edit_is_found_by_the_next_link_or_by_an_anchor(db: Db) -> None:
    await filled(db)
    head = (await verify_chain(db)).head_hash
    doc = await db.events.find_one({"_id": 5})
    assert doc is not None
    doc["data"] = {"n": 1000, "s": 0}
    doc[HASH] = link(doc[PREV], doc)
    await db.events.replace_one({"_id": 5}, doc)
    assert await first_broken(db) == (6, ["unlinked"])
    # Rewriting every later link too hides it from the chain alone: the anchor catches it.
    previous = doc[HASH]
    for sequence in range(6, 21):
        later = await db.events.find_one({"_id": sequence})
        assert later is not None
        later[PREV] = previous
        later[HASH] = previous = link(previous, later)
        await db.events.replace_one({"_id": sequence}, later)
    assert (await verify_chain(db)).ok
    anchored = await verify_chain(db, anchors=[(20, head)])
    assert anchored.first_broken == 20 and anchored.breaks[0].kind == "anchor"


async def test_a_stripped_hash_after_the_chain_began_is_found(db: Db) -> None:
    await filled(db)
    # Events from before the chain existed carry none: they are accepted.
    await db.events.update_many({"_id": {"$lte": 3}}, {"$unset": {HASH: "", PREV: ""}})
    await db.events.update_one({"_id": 4}, {"$set": {PREV: ""}})
    await db.events.update_one({"_id": 4}, {"$set": {HASH: link("", await _doc(db, 4))}})
    await db.events.update_one({"_id": 5}, {"$set": {PREV: (await _doc(db, 4))[HASH]}})
    await db.events.update_one(
        {"_id": 5}, {"$set": {HASH: link((await _doc(db, 4))[HASH], await _doc(db, 5))}}
    )
    report = await verify_chain(db)
    assert report.events == 20 and report.chained == 17
    assert report.first_broken == 6  # 6 still links to 5's old hash
    await db.events.update_one({"_id": 12}, {"$unset": {HASH: ""}})
    assert [b.kind for b in (await verify_chain(db)).breaks if b.sequence == 12] == ["stripped"]


async def _doc(db: Db, sequence: int) -> Document:
    found = await db.events.find_one({"_id": sequence})
    assert found is not None
    return found


async def test_check_reports_tampering_as_the_chain_invariant(db: Db) -> None:
    await filled(db)
    await db.events.update_one({"_id": 3}, {"$set": {"eventType": "debited"}})
    report = await check(db, settle_s=0)
    (finding,) = [f for f in report.findings if f.invariant == "chain"]
    assert finding.where == {"sequence": 3} and not finding.repairable


async def test_archive_backup_and_restore_keep_the_chain(
    db: Db, client: Any, tmp_path: Path
) -> None:
    store = await filled(db)
    await store.archive_stream("acc", "a2")
    await store.append("acc", "a1", [NewEvent("credited", {"n": 9})])
    assert (await verify_chain(db)).ok and await db.events_archive.count_documents({}) == 4
    await backup(db, tmp_path / "b")
    other = client.get_database(db.name + "_r", codec_options=db.codec_options)
    try:
        await restore(other, tmp_path / "b", erasures=[])
        restored = await verify_chain(other)
        assert restored.ok and restored.head_hash == (await verify_chain(db)).head_hash
    finally:
        await client.drop_database(other.name)


def bump(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"n": data["n"] * 10, "s": data["s"]}


async def test_a_migration_chains_its_copy_to_the_original(db: Db) -> None:
    store = await filled(db)
    await store.archive_stream("acc", "a0")  # archived before the run: not copied
    migrator = Migrator(db, [Migration("bump", "credited", "1.0", "2.0", bump)], batch_size=3)
    assert (await migrator.run("events_v2")).complete
    assert (await migrator.verify("events_v2")).ok
    originals = {d["_id"]: d[HASH] async for d in db.events.find()}
    async for copy in db.events_v2.find():
        assert copy[SOURCE_HASH] == originals[copy["_id"]]  # every event was changed
    await migrator.switch("events_v2")
    moved = EventStore(db, collection="events_v2")
    await moved.append("acc", "a3", [NewEvent("credited", {"n": 5, "s": 3}, event_version="2.0")])
    assert (await verify_chain(db)).ok


async def test_the_cli_names_the_head_and_the_first_break(db: Db, server_uri: str) -> None:
    await filled(db, 2, 2)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return esmongo(server_uri, db, "verify", *args)

    intact = verify()
    assert intact.returncode == 0, intact.stderr
    head = intact.stdout.strip().rsplit(" ", 1)[-1]
    assert parse_anchor(head)[0] == 4
    assert verify("--anchor", head).returncode == 0
    await db.events.update_one({"_id": 2}, {"$set": {"data.n": 7}})
    broken = verify()
    assert broken.returncode == 1 and "BROKEN: first at #2" in broken.stdout
    bad = verify("--anchor", "4:nothex")
    assert bad.returncode == 2 and "SEQUENCE:HASH" in bad.stderr
