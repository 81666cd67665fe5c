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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from esmongo.codec import Document
from esmongo.errors import EsmongoError
from esmongo.ops.check.chain import verify_chain
from esmongo.ops.migration import seal
from esmongo.schema.catalog import COLLECTION as SCHEMAS
from esmongo.store import fence
from esmongo.store.collections import (
    ACTIVE,
    ARCHIVE,
    ARCHIVED_STREAMS,
    COUNTERS,
    DEFAULT_EVENTS,
    META,
    MIGRATIONS,
    WRITERS,
)
from esmongo.store.inline import INLINE, INLINE_OFF
from esmongo.store.transactions import SEQUENCE_COUNTER

Progress = Callable[[str, int], None]

BATCH = 1000
DUPLICATE_KEY = 11000
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def _raw(db: AsyncDatabase[Document]) -> AsyncDatabase[RawBSONDocument]:
    """The same database, documents kept as their exact BSON bytes."""
    return cast(
        "AsyncDatabase[RawBSONDocument]", db.client.get_database(db.name, codec_options=RAW)
    )


def _batches(path: Path) -> Iterator[list[RawBSONDocument]]:
    """The documents of a .bson file, a batch at a time (the file may be large)."""
    with open(path, "rb") as file:
        batch: list[RawBSONDocument] = []
        for doc in bson.decode_file_iter(file, RAW):
            batch.append(doc)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


class BackupError(EsmongoError):
    """A backup or restore could not be made safely."""


STORE_OWNED = (SCHEMAS, ARCHIVED_STREAMS, ARCHIVE, META, MIGRATIONS)
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
    def collections(self) -> tuple[str, ...]:
        """Caches and derived data are rebuilt from events; only what cannot be derived
        is kept. In this order: the archive's registry is read after the log (see the
        module docstring)."""
        owned = (ARCHIVED_STREAMS, ARCHIVE, META, MIGRATIONS)
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


def _checksum_update(digest: Any, doc: RawBSONDocument) -> None:
    digest.update(f"{doc['sequence']}|{doc['eventId']}|{doc['aggregateId']}\n".encode())


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
    counter = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
    head = int(counter["value"]) if counter else 0
    archives_before = int(counter.get("archives", 0)) if counter else 0
    report = BackupReport(head_sequence=head)
    layout = (await Layout.of(db)).keeping(keep)
    existing = set(await db.list_collection_names())
    raw = _raw(db)
    digest = hashlib.sha256()
    archived: dict[tuple[str, str], int] = {}  # stream -> its archive number
    for name in layout.collections:
        if name not in existing:
            continue
        query: Document = {"sequence": {"$lte": head}} if name in layout.logs else {}
        sort = [("sequence", 1)] if name in layout.logs else None
        if name == ARCHIVED_STREAMS:
            after = await db[COUNTERS].find_one({"_id": SEQUENCE_COUNTER})
            query = {"number": {"$lte": int((after or {}).get("archives", 0))}}
            async for entry in db[name].find(
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
            async for doc in raw[name].find(query, sort=sort, batch_size=BATCH):
                if name == ARCHIVE and (doc["aggregateType"], doc["aggregateId"]) not in archived:
                    continue  # archived after the registry was read: it is in events.bson
                out.write(doc.raw)
                count += 1
                if progress is not None and count % BATCH == 0:
                    progress(name, count)
        indexes = [ix async for ix in await db[name].list_indexes()]
        metadata = {"indexes": indexes, "collectionName": name}
        (target / f"{name}.metadata.json").write_text(json_util.dumps(metadata))
        report.counts[name] = count
        if progress is not None:
            progress(name, count)
    for name in layout.logs:  # the final files, in that order: what restore digests
        path = target / f"{name}.bson"
        if path.exists():
            for events in _batches(path):
                for event in events:
                    _checksum_update(digest, event)
    report.events_checksum = digest.hexdigest()
    manifest = {
        "headSequence": head,
        "counts": report.counts,
        "checksum": report.events_checksum,
        "eventsCollection": layout.events,
        "sealed": list(layout.sealed),
        "kept": list(layout.kept),
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
        for batch in _batches(path):
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
) -> BackupReport:
    """Load a backup into `db`, which must not hold events yet. Verifies the checksum and
    the events' chain (esmongo.store.chain).

    Nor may `db` hold state derived from events (snapshots, checkpoints, read models...):
    state newer than the backup would be loaded as it is and the events it has seen
    skipped. `drop_state` empties those collections first; without it they are refused.
    The application's collections the backup kept, and those named in `keep`, are not
    state: what they hold stays, and the backup's entries merge into them.
    """
    source = _source(directory)
    manifest_file = source / "esmongo-backup.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else None
    layout = Layout.from_manifest(manifest, source).keeping(keep)
    if any([await db[name].estimated_document_count() > 0 for name in layout.logs]):
        raise BackupError(f"database {db.name} already has events: restore into an empty one")
    await _clear_state(db, layout, drop_state=drop_state)
    report = BackupReport(head_sequence=0)
    raw = _raw(db)
    digest = hashlib.sha256()
    seen = bytearray()  # one byte per sequence: each must be restored exactly once
    for name in layout.collections:
        data = source / f"{name}.bson"
        if not data.exists():
            continue
        meta_file = source / f"{name}.metadata.json"
        if meta_file.exists():
            await _create_indexes(db, name, json_util.loads(meta_file.read_text()))
        count = 0
        batches = _batches(data)
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            if name in layout.logs:
                for doc in batch:
                    _checksum_update(digest, doc)
                    sequence = int(doc["sequence"])
                    if sequence >= len(seen):
                        seen.extend(bytes(sequence + 1 - len(seen) + BATCH))
                    if seen[sequence]:
                        raise BackupError(f"sequence {sequence} is in the backup twice")
                    seen[sequence] = 1
                report.head_sequence = max(report.head_sequence, int(batch[-1]["sequence"]))
            count += await _insert(raw, name, batch, log=name in layout.logs)
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
    last = await db[ARCHIVED_STREAMS].find_one({}, {"number": 1}, sort=[("number", -1)])
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
    chain = await verify_chain(db)  # the checksum covers ids; the chain covers every field
    if not chain.ok:
        first = chain.breaks[0]
        raise BackupError(
            f"the restored events' chain is broken at #{first.sequence} ({first.problem}): "
            "the backup was altered after it was made"
        )
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
        count = await db[name].count_documents({}, limit=1_000_000)
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


async def _insert(
    raw: AsyncDatabase[RawBSONDocument], name: str, batch: list[RawBSONDocument], *, log: bool
) -> int:
    """Insert a batch; outside the logs, entries already there (same unique key) are kept."""
    if log:
        await raw[name].insert_many(batch, ordered=True)
        return len(batch)
    try:
        await raw[name].insert_many(batch, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(batch) - len(errors)
    return len(batch)


def _source(directory: Path) -> Path:
    """The folder holding the .bson files: `directory` itself or its one database folder."""
    if any(directory.glob("*.bson")):
        return directory
    folders = [p for p in directory.iterdir() if p.is_dir()] if directory.exists() else []
    if len(folders) == 1 and any(folders[0].glob("*.bson")):
        return folders[0]
    raise BackupError(f"no backup found in {directory}")


async def _create_indexes(db: AsyncDatabase[Document], name: str, metadata: Document) -> None:
    models = []
    for spec in metadata.get("indexes", []):
        if spec.get("name") == "_id_":
            continue
        options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
        models.append(IndexModel(list(spec["key"].items()), **options))
    if models:
        await db[name].create_indexes(models)
