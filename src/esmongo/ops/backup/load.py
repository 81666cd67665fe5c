"""Restoring a backup into an empty database: checksum, continuity and chain verified."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops.backup import own_logs as backup_logs
from esmongo.ops.backup.files import (
    BATCH,
    BackupError,
    batches,
    checksum_update,
    create_indexes,
    insert,
    raw_db,
    source_of,
)
from esmongo.ops.backup.layout import BackupReport, Layout, Progress
from esmongo.ops.check.chain import verify_chain
from esmongo.ops.migration import seal
from esmongo.schema.catalog import COLLECTION as SCHEMAS
from esmongo.store import fence
from esmongo.store.collections import (
    ACTIVE,
    ARCHIVED_STREAMS,
    COUNTERS,
    DATA_KEYS,
    META,
    WRITERS,
)
from esmongo.store.data_keys import DataKeys, Erasure
from esmongo.store.inline import INLINE, INLINE_OFF
from esmongo.store.layout import layout_record, log_database
from esmongo.store.transactions import SEQUENCE_COUNTER


async def restore(
    db: AsyncDatabase[Document],
    directory: Path,
    progress: Progress | None = None,
    *,
    drop_state: bool = False,
    keep: Sequence[str] = (),
    erasures: Sequence[Erasure],
) -> BackupReport:
    """Load a backup into `db`, which must not hold events yet. Verifies the checksum and
    the events' chain (esmongo.store.chain).

    `erasures`: the current erasure log (esmongo.ops.erasures.read), kept outside the
    database and its backups. Every data key it names, and every one the backup's own log
    names, is deleted before the restore returns: a backup made before a subject was
    forgotten does not bring its data back. Give it even when empty: required, so that no
    caller forgets it.

    Nor may `db` hold state derived from events (snapshots, checkpoints, read models...):
    state newer than the backup would be loaded as it is and the events it has seen
    skipped. `drop_state` empties those collections first; without it they are refused.
    The application's collections the backup kept, and those named in `keep`, are not
    state: what they hold stays, and the backup's entries merge into them.
    """
    source = source_of(directory)
    manifest_file = source / "esmongo-backup.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else None
    layout = Layout.from_manifest(manifest, source).keeping(keep)
    own = [
        (backup_logs.OwnLog.from_manifest(entry), str(entry["checksum"]))
        for entry in (manifest or {}).get("ownLogs", [])
    ]
    log = await log_database(db)
    if any([await log[name].estimated_document_count() > 0 for name in layout.logs]) or any(
        [await db[name].estimated_document_count() > 0 for o, _ in own for name in o.logs]
    ):
        raise BackupError(f"database {db.name} already has events: restore into an empty one")
    # The layout is the target's (a backup restores into either layout): esmongo_meta's
    # record of it is put back over the backup's.
    where = await layout_record(db)
    await _clear_state(db, layout, drop_state=drop_state)
    report = BackupReport(head_sequence=0)
    erased = {key for erasure in erasures for key in erasure.keys}
    raw, raw_log = raw_db(db), raw_db(log)
    digest = hashlib.sha256()
    seen = bytearray()  # one byte per sequence: each must be restored exactly once
    for name in layout.collections:
        data = source / f"{name}.bson"
        if not data.exists():
            continue
        into = log if name in layout.in_log else db
        await create_indexes(into, name, source)
        if name == META:  # the backup's record of the active log replaces the target's
            await db[META].delete_one({"_id": ACTIVE})
        count = 0
        files = batches(data)
        while (batch := await asyncio.to_thread(next, files, None)) is not None:
            if name in layout.logs:
                for doc in batch:
                    checksum_update(digest, doc)
                    sequence = int(doc["sequence"])
                    if sequence >= len(seen):
                        seen.extend(bytes(sequence + 1 - len(seen) + BATCH))
                    if seen[sequence]:
                        raise BackupError(f"sequence {sequence} is in the backup twice")
                    seen[sequence] = 1
                report.head_sequence = max(report.head_sequence, int(batch[-1]["sequence"]))
            if name == DATA_KEYS:  # a forgotten key is never written, even for a moment
                kept = [doc for doc in batch if doc["_id"] not in erased]
                report.keys_erased += len(batch) - len(kept)
                if not kept:
                    continue
                batch = kept
            target = raw_log if into is log else raw
            count += await insert(target, name, batch, log=name in layout.logs)
            if progress is not None:
                progress(name, count)
        report.counts[name] = count
        if progress is not None:
            progress(name, count)
    report.events_checksum = digest.hexdigest()
    if manifest is not None and manifest["checksum"] != report.events_checksum:
        raise BackupError("the restored events do not match the backup's checksum")
    held = sum(report.counts.get(name, 0) for name in layout.logs)
    if held != report.head_sequence:
        raise BackupError(
            f"restored {held} events but the last sequence is "
            f"{report.head_sequence}: the backup is incomplete"
        )
    for name in layout.sealed:  # a copy made for audit stays read-only
        if name in report.counts:
            await seal(db, name)
    if where:
        await db[META].update_one(
            {"_id": ACTIVE},
            {"$set": where, "$setOnInsert": {"name": layout.events}},
            upsert=True,
        )
    last = await log[ARCHIVED_STREAMS].find_one({}, {"number": 1}, sort=[("number", -1)])
    counter = {
        "value": report.head_sequence,
        "archives": int((last or {}).get("number", 0)),
        # The write fence opens on the restored log, whatever an `init` of this database
        # before the restore wrote there (esmongo.store.fence).
        fence.WRITABLE: layout.events,
    }
    await db[COUNTERS].update_one(
        {"_id": SEQUENCE_COUNTER},
        # `restores` moves the counter's generation even where `archives` goes back: a
        # process that remembers events of the replaced log checks them again.
        # No projection stays inline (esmongo.store.inline): the read models are rebuilt
        # from sequence 0 by their runners, which hand them over again.
        {
            "$set": counter,
            "$unset": {fence.SEALED_FOR: "", INLINE: "", INLINE_OFF: ""},
            "$inc": {fence.RESTORES: 1},
            "$setOnInsert": fence.incarnation(),
        },
        upsert=True,
    )
    keys = DataKeys(db, None)  # and the backup's own log (a forget cut short), logged
    report.keys_erased += await keys.apply([*await keys.logged(), *erasures])
    chain = await verify_chain(db)  # the checksum covers ids; the chain covers every field
    if not chain.ok:
        first = chain.breaks[0]
        raise BackupError(
            f"the restored events' chain is broken at #{first.sequence} ({first.problem}): "
            "the backup was altered after it was made"
        )
    for own_log, checksum in own:
        report.counts.update(await backup_logs.load(db, source, own_log, checksum, progress))
        report.own_logs[own_log.events] = own_log.head
    return report


KEPT_ON_RESTORE = frozenset({SCHEMAS, COUNTERS, WRITERS})
"""What a database may hold before a restore, besides the application's kept collections:
registrations the backup's entries merge into, the counter (overwritten), and live
writers' session ids. Anything else, whatever its name (read models are named by their
projections), is state."""


async def _clear_state(db: AsyncDatabase[Document], layout: Layout, *, drop_state: bool) -> None:
    """Refuse (or with `drop_state`, empty) every collection that holds state."""
    kept = KEPT_ON_RESTORE | set(layout.kept)
    held: dict[str, int] = {}
    for name in sorted(await db.list_collection_names()):
        if name in kept or name.startswith("system."):
            continue
        # esmongo_meta's record of the active log is replaced by the backup's: not state.
        query: Document = {"_id": {"$ne": ACTIVE}} if name == META else {}
        count = await db[name].count_documents(query, limit=1_000_000)
        if count:
            held[name] = count
    if not held:
        return
    if not drop_state:
        found = ", ".join(f"{name} ({count} documents)" for name, count in held.items())
        raise BackupError(
            f"database {db.name} holds state that a restore would mix with older events: "
            f"{found}. Restore into an empty database, or drop that state first "
            "(--drop-state; projections are rebuilt from the events after a restore)"
        )
    for name in held:
        await db[name].delete_many({})
