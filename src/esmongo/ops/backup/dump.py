"""Writing a backup: an exact cut of the log at its head, whatever is appended meanwhile."""

from __future__ import annotations

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
    raw_db,
    write_metadata,
)
from esmongo.ops.backup.layout import BackupReport, Layout, Progress
from esmongo.store.collections import (
    ARCHIVE,
    ARCHIVED_STREAMS,
    COUNTERS,
)
from esmongo.store.layout import log_database
from esmongo.store.transactions import SEQUENCE_COUNTER


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
        counts, checksum = await backup_logs.dump(log, own_log, target, progress)
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
