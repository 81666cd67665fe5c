"""Whose fault a failed batch write is: one append's (its stream moved, its ids are taken)
or the batch's (a write conflict to retry, a sealed collection)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import BulkWriteError, PyMongoError

from esmongo.store.pending import PendingAppend
from esmongo.store.transactions import WRITE_CONFLICT

DUPLICATE_KEY = 11000
DOCUMENT_VALIDATION = 121


def validation_failed(exc: PyMongoError) -> bool:
    details = exc.details if isinstance(exc, BulkWriteError) else {}
    errors = (details or {}).get("writeErrors") or []
    return any(e.get("code") == DOCUMENT_VALIDATION for e in errors)


def culprits(
    exc: BulkWriteError, batch: list[PendingAppend]
) -> dict[PendingAppend, list[Mapping[str, Any]]]:
    """The appends whose own documents failed, each with its errors (and request index).

    Empty when the failure is the batch's, not an append's: a write conflict with another
    transaction (retry it all) or a clash of sequence numbers (the counter is wrong).
    """
    owners: list[tuple[PendingAppend, int]] = [
        (append, i) for append in batch for i, r in enumerate(append.requests) for _ in r.events
    ]
    blamed: dict[PendingAppend, list[Mapping[str, Any]]] = {}
    for error in (exc.details or {}).get("writeErrors") or []:
        index = error.get("index")
        code = error.get("code")
        if code in (WRITE_CONFLICT, DOCUMENT_VALIDATION):
            return {}  # the batch's failure: a conflict to retry, or a sealed collection
        if not isinstance(index, int) or index >= len(owners):
            return {}
        if code == DUPLICATE_KEY and not (on_versions(error) or on_event_ids(error)):
            return {}
        append, request = owners[index]
        blamed.setdefault(append, []).append({**error, "request": request})
    return blamed


def key_of(error: Mapping[str, Any]) -> set[str]:
    pattern = error.get("keyPattern") or error.get("keyValue") or {}
    return set(pattern)


def on_versions(error: Mapping[str, Any]) -> bool:
    """A duplicate (aggregateType, aggregateId, aggregateVersion): the stream moved on."""
    return "aggregateVersion" in key_of(error) or "aggregate_ordering" in error.get("errmsg", "")


def on_event_ids(error: Mapping[str, Any]) -> bool:
    return key_of(error) == {"eventId"} or "index: event_id " in error.get("errmsg", "")
