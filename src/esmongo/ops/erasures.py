"""Forgetting a data subject, and the erasure log that keeps it forgotten across restores.

`forget` deletes the subject's data keys (esmongo.store.data_keys), so every personal field
encrypted for it reads as redacted from then on, drops the snapshots of the streams that
hold such fields (they cache clear state), records the erasure in the audit trail (who,
why, the subject's id and how many keys: none of the personal data itself), and appends it
to the erasure log file. Read models keep what they projected until they are rebuilt.

The erasure log lives in two places: the database (`esmongo_erasures`, backed up with
everything else) and a file outside the database and its backups (`ESMONGO_ERASURE_LOG`,
JSON lines, fsynced). A backup made before an erasure still holds the key; a restore
refuses to run without the file and deletes every key it names, so an older backup cannot
bring a forgotten subject's data back (docs/security.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from esmongo.errors import EsmongoError
from esmongo.model.snapshots import SnapshotStore
from esmongo.ops.audit import Actor, AuditTrail
from esmongo.store import EventStore
from esmongo.store.data_keys import Erasure
from esmongo.store.personal import personal_fields


class ErasureLogError(EsmongoError):
    """The erasure log file cannot be read or written."""

    code = "erasure_log_error"


@dataclass(frozen=True)
class Forgotten:
    erasure: Erasure
    audit_sequence: int
    streams: int
    """Streams that hold the subject's fields: their snapshots were dropped."""


async def forget(
    store: EventStore,
    subject: str,
    actor: Actor,
    *,
    reason: str | None,
    log: Path,
) -> Forgotten:
    """Delete the subject's keys, log the erasure to `log` and the audit trail. Forgetting
    again is harmless (logged once, audited again) and writes to `log` what an earlier
    forget could not; an unknown subject is UnknownSubjectError, with nothing written."""
    subject = subject.strip()
    if not subject:
        raise ValueError("the subject to forget is empty (e.g. user:usr_123 or Account/acc-1)")
    erasure = await store.keys.forget(subject)
    # Every erasure of the subject the database logged and the file lacks (this one, or
    # one whose line could not be written last time): the file is what restores replay.
    in_file = _logged_in(log)
    for logged in await store.keys.logged(subject):
        if (logged.subject, logged.keys) not in in_file:
            append(log, logged)
    streams = await streams_holding(store, await store.keys.erased_keys(subject))
    snapshots = SnapshotStore(store.db)
    for aggregate_type, aggregate_id in streams:  # caches of the clear state (and history)
        await snapshots.delete(aggregate_type, aggregate_id)
    details = {
        "subject": subject,
        "keysDeleted": len(erasure.keys),
        "already": erasure.already,
        "snapshotsDropped": len(streams),
    }
    event = await AuditTrail(store).record(
        "DataSubjectForgotten", actor, reason=reason, details=details
    )
    return Forgotten(erasure, event.sequence, len(streams))


async def streams_holding(store: EventStore, key_ids: list[str]) -> list[tuple[str, str]]:
    """The streams with a field encrypted by one of these keys (active log and archive): a
    scan over every personal path the registry knows, run once per erasure."""
    if not key_ids:
        return []
    paths = {f"metadata.{name}" for name in store.personal.metadata_fields}
    for schema in store.registry:
        paths |= {"data." + ".".join(f.path) for f in personal_fields(schema.schema)}
    query = {"$or": [{f"{path}.key": {"$in": key_ids}} for path in sorted(paths)]}
    found: set[tuple[str, str]] = set()
    for events in (store.events, store.archive.events):
        async for doc in events.find(query, {"aggregateType": 1, "aggregateId": 1}):
            found.add((doc["aggregateType"], doc["aggregateId"]))
    return sorted(found)


def append(log: Path, erasure: Erasure) -> None:
    """One JSON line, fsynced: a forget is not done until its line is on disk."""
    line = {"subject": erasure.subject, "keys": list(erasure.keys), "at": erasure.at.isoformat()}
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise ErasureLogError(
            f"the keys of {erasure.subject} are deleted, but the erasure log {log} could "
            f"not be written ({exc}): fix it and forget the subject again to log it"
        ) from exc


def _logged_in(log: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(subject, key ids) of each line of the log; none when it is not a file yet."""
    return {(e.subject, e.keys) for e in read(log)} if log.is_file() else set()


def read(log: Path) -> list[Erasure]:
    """The erasures in a log file; ErasureLogError naming the line that is wrong."""
    try:
        text = log.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ErasureLogError(
            f"no erasure log at {log}: a restore must replay the current log so that no "
            "forgotten key comes back. Point ESMONGO_ERASURE_LOG at it (or, if no subject "
            "was ever forgotten, create it empty)"
        ) from exc
    except OSError as exc:
        raise ErasureLogError(f"cannot read the erasure log {log}: {exc}") from exc
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            found.append(
                Erasure(
                    str(entry["subject"]),
                    tuple(str(k) for k in entry["keys"]),
                    datetime.fromisoformat(entry["at"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ErasureLogError(
                f"{log}, line {number}: not an erasure ({exc!r}); expected "
                '{"subject": ..., "keys": [...], "at": ISO time}'
            ) from exc
    return found
