"""Logical backup and restore of an esmongo database, in mongodump's layout.

`<dir>/<db>/<collection>.bson` (concatenated BSON documents) and
`<collection>.metadata.json` (indexes), so `mongorestore` can read our backups and we can
restore a `mongodump`. The events log is append-only: reading the head sequence first and
then every event up to it gives an exact cut, whatever is appended meanwhile. The counter
is written back as that head, so appends after a restore go on without a gap.

After a migration switch the log is the active collection (esmongo_meta names it), not
`events`; the manifest records its name and restore puts it back under it. The sealed
originals of past migrations are immutable and copied whole, for audit.

Besides the store's collections and the schema catalog, a backup holds the application
collections its caller names (`keep`: e.g. the service's API keys), which cannot be derived
from events either; the manifest lists them, so restore puts them back.

Archived streams (esmongo.store.archive) are in `events_archive` and `archived_streams`; their
sequences are part of the cut. A stream archived while the backup reads `events` may be
half read there: the archive number on the counter, read before `events` and again after,
names those streams, their events are taken out of `events.bson`, and every archived
stream is taken whole from `events_archive`. So each stream is in one file, and the two
event files hold every sequence up to the head exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops import backup_logs
from esmongo.ops.backup_files import (
    BATCH,
    BackupError,
    batches,
    checksum_update,
    create_indexes,
    insert,
    raw_db,
    source_of,
    write_metadata,
)
from esmongo.ops.check.chain import verify_chain
from esmongo.ops.migration import seal
from esmongo.schema.catalog import COLLECTION as SCHEMAS
from esmongo.store import fence
from esmongo.store.collections import (
    ACTIVE,
    ARCHIVE,
    ARCHIVED_STREAMS,
    CHAIN_LINKS,
    COUNTERS,
    DATA_KEYS,
    DEFAULT_EVENTS,
    ERASURES,
    META,
    MIGRATIONS,
    WRITERS,
)
from esmongo.store.data_keys import DataKeys, Erasure
from esmongo.store.inline import INLINE, INLINE_OFF
from esmongo.store.layout import layout_record, log_database
from esmongo.store.transactions import SEQUENCE_COUNTER

__all__ = ["BackupError", "BackupReport", "Layout", "backup", "restore"]

Progress = Callable[[str, int], None]

STORE_OWNED = (
    SCHEMAS,
    ARCHIVED_STREAMS,
    ARCHIVE,
    CHAIN_LINKS,
    META,
    MIGRATIONS,
    DATA_KEYS,
    ERASURES,
)
"""Beside the log: what esmongo keeps that cannot be derived from events."""


@dataclass(frozen=True)
class Layout:
    """Which collections a backup holds: the active log, sealed originals if any, and the
    application's collections that cannot be derived from events (`kept`)."""

    events: str = DEFAULT_EVENTS
    sealed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def logs(self) -> tuple[str, str]:
        """The collections of events: in the cut, the checksum and the continuity check."""
        return (self.events, ARCHIVE)

    @property
    def in_log(self) -> frozenset[str]:
        """The collections that live in the log database (esmongo.store.layout)."""
        return frozenset({*self.logs, ARCHIVED_STREAMS, CHAIN_LINKS, *self.sealed})

    @property
    def collections(self) -> tuple[str, ...]:
        """Caches and derived data are rebuilt from events; only what cannot be derived
        is kept. In this order: the archive's registry is read after the log (see the
        module docstring); the data keys after the events, so that every event of the cut
        finds its key (a key is made before the event it encrypts)."""
        owned = (ARCHIVED_STREAMS, ARCHIVE, CHAIN_LINKS, META, MIGRATIONS, DATA_KEYS, ERASURES)
        return (self.events, SCHEMAS, *self.kept, *owned, *self.sealed)

    def keeping(self, names: Sequence[str]) -> Layout:
        """The same layout, with these application collections too."""
        kept = tuple(dict.fromkeys([*self.kept, *names]))
        owned = {self.events, *STORE_OWNED, *self.sealed, COUNTERS, WRITERS}
        if clash := [name for name in kept if name in owned]:
            raise BackupError(f"{', '.join(clash)}: esmongo's own, not an application's")
        return Layout(self.events, self.sealed, kept)

    @classmethod
    async def of(cls, db: AsyncDatabase[Document]) -> Layout:
        meta = await db[META].find_one({"_id": ACTIVE}) or {}
        active = str(meta.get("name", DEFAULT_EVENTS))
        sealed = tuple(dict.fromkeys(str(n) for n in meta.get("previous", []) if n != active))
        return cls(active, sealed)

    @classmethod
    def from_manifest(cls, manifest: Document | None, source: Path) -> Layout:
        """A mongodump (no manifest) is read for the store's collections only; a backup
        from before `kept` was recorded kept every other file it holds."""
        if manifest is None:
            return cls()
        layout = cls(
            manifest.get("eventsCollection", DEFAULT_EVENTS), tuple(manifest.get("sealed", []))
        )
        if "kept" in manifest:
            return layout.keeping(manifest["kept"])
        known = set(layout.collections)
        return layout.keeping(sorted({p.stem for p in source.glob("*.bson")} - known))


@dataclass
class BackupReport:
    head_sequence: int
    counts: dict[str, int] = field(default_factory=dict)
    events_checksum: str = ""
    keys_erased: int = 0
    """On restore: data keys the backup held that the erasure log deleted."""
    own_logs: dict[str, int] = field(default_factory=dict)
    """Each log of its own (its events collection) and its head."""


async def backup(
    db: AsyncDatabase[Document],
    directory: Path,
    progress: Progress | None = None,
    *,
    keep: Sequence[str] = (),
) -> BackupReport:
    """Write every esmongo collection that is not derived from events into `directory`,
    and the application's collections named in `keep` (neither derived from events)."""
    Layout().keeping(keep)  # a name of esmongo's own is refused before anything is written
    target = directory / db.name
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: choose a new directory")
    target.mkdir(parents=True, exist_ok=True)
    own = await backup_logs.cut(db)
    counter = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
    head = int(counter["value"]) if counter else 0
    archives_before = int(counter.get("archives", 0)) if counter else 0
    report = BackupReport(head_sequence=head)
    layout = (await Layout.of(db)).keeping(keep)
    log = await log_database(db)
    existing = set(await db.list_collection_names())
    existing_in_log = set(await log.list_collection_names())
    raw, raw_log = raw_db(db), raw_db(log)
    digest = hashlib.sha256()
    archived: dict[tuple[str, str], int] = {}  # stream -> its archive number
    for name in layout.collections:
        source = log if name in layout.in_log else db
        if name not in (existing_in_log if source is log else existing):
            continue
        query: Document = {"sequence": {"$lte": head}} if name in layout.logs else {}
        sort = [("sequence", 1)] if name in layout.logs else None
        if name == ARCHIVED_STREAMS:
            after = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
            query = {"number": {"$lte": int((after or {}).get("archives", 0))}}
            async for entry in source[name].find(
                query, {"aggregateType": 1, "aggregateId": 1, "number": 1}
            ):
                archived[(entry["aggregateType"], entry["aggregateId"])] = int(entry["number"])
            moved = {k for k, n in archived.items() if n > archives_before}
            if moved:  # archived while `events` was read: they are taken from the archive
                report.counts[layout.events] = _drop_streams(
                    target / f"{layout.events}.bson", moved
                )
        count = 0
        with open(target / f"{name}.bson", "wb") as out:  # noqa: ASYNC230 - sequential dump
            found = (raw_log if source is log else raw)[name].find(
                query, sort=sort, batch_size=BATCH
            )
            async for doc in found:
                if name == ARCHIVE and (doc["aggregateType"], doc["aggregateId"]) not in archived:
                    continue  # archived after the registry was read: it is in events.bson
                out.write(doc.raw)
                count += 1
                if progress is not None and count % BATCH == 0:
                    progress(name, count)
        await write_metadata(source, name, target)
        report.counts[name] = count
        if progress is not None:
            progress(name, count)
    for name in layout.logs:  # the final files, in that order: what restore digests
        path = target / f"{name}.bson"
        if path.exists():
            for events in batches(path):
                for event in events:
                    checksum_update(digest, event)
    report.events_checksum = digest.hexdigest()
    own_logs = []
    for own_log in own.logs:
        counts, checksum = await backup_logs.dump(db, own_log, target, existing, progress)
        for name in own_log.positions:
            counts[name] = backup_logs.dump_positions(name, own.positions[name], target)
            if name in existing:
                await write_metadata(db, name, target)
        report.counts.update(counts)
        report.own_logs[own_log.events] = own_log.head
        own_logs.append({**own_log.manifest(), "checksum": checksum})
        if (held := sum(counts.get(name, 0) for name in own_log.logs)) != own_log.head:
            raise BackupError(
                f"{own_log.events} holds {held} events up to its head {own_log.head}: the log has "
                f"gaps or was changed outside esmongo; backup kept in {target}"
            )
    manifest = {
        "headSequence": head,
        "counts": report.counts,
        "checksum": report.events_checksum,
        "eventsCollection": layout.events,
        "sealed": list(layout.sealed),
        "kept": list(layout.kept),
        "ownLogs": own_logs,
    }
    (target / "esmongo-backup.json").write_text(json.dumps(manifest, indent=2))
    held = sum(report.counts.get(name, 0) for name in layout.logs)
    if held != head:
        raise BackupError(
            f"the events collections hold {held} events up to sequence {head}: the log has "
            f"gaps or was changed outside esmongo; backup kept in {target}"
        )
    return report


def _drop_streams(path: Path, streams: set[tuple[str, str]]) -> int:
    """Rewrite a .bson file of events without these streams' events; returns what is left."""
    kept = 0
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        for batch in batches(path):
            for doc in batch:
                if (doc["aggregateType"], doc["aggregateId"]) not in streams:
                    out.write(doc.raw)
                    kept += 1
    partial.replace(path)
    return kept


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
