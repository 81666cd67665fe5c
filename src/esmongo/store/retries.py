"""Appends that go again: a caller's retry, and an append taken out of a batch.

Event ids are unique, so an append whose ids were all recorded is a retry of one that
committed (its caller never heard back): it gets that first recording, and writes nothing.
An append taken out of a batch by the unique indexes is told why (`Retries.explain`), or goes
round again when it only lost a race.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from esmongo.codec import Document
from esmongo.errors import ConcurrencyError, DuplicateEventError
from esmongo.events import ANY, STREAM_EXISTS, RecordedEvent
from esmongo.store.archive import Archive
from esmongo.store.pending import PendingAppend
from esmongo.store.requests import AppendRequest
from esmongo.store.stream_versions import StreamVersions
from esmongo.store.transactions import TRANSACTION_TIMEOUT_S
from esmongo.store.write_errors import DUPLICATE_KEY, on_versions

MAX_RETRIES = 10
"""Rounds an append may go again while its event ids are taken by an append in flight
elsewhere. An ANY append that lost a race for its stream's next version goes again until
TRANSACTION_TIMEOUT_S after it was made instead: every lost race is another append's
commit, so the log moves on, however many writers contend for one stream."""


class Retries:
    """Settles the appends a batch took out, or sends them round again."""

    def __init__(
        self,
        events: AsyncCollection[Document],
        archive: Archive | None,
        versions: StreamVersions,
    ) -> None:
        self.events = events
        self.archive = archive
        self.versions = versions

    async def explain(self, append: PendingAppend, errors: list[Mapping[str, Any]]) -> bool:
        """Tell an append taken out of a batch why; True when it should simply try again."""
        try:
            if await self.settled_before(append):
                return False
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                append.fail(BulkWriteError({"writeErrors": errors, "nInserted": 0}))
                return False
            moved = [append.requests[e["request"]] for e in errors if on_versions(e)]
            for request in moved:
                self.versions.forget(request.stream)  # its next check asks for the head
                if (
                    request.expected_version not in (ANY, STREAM_EXISTS)
                    or request.versions is not None
                ):
                    actual = await self.versions.head(request.stream)
                    append.fail(ConcurrencyError(request.stream, request.expected_version, actual))
                    return False
            raced = bool(moved) and time.monotonic() < append.submitted + TRANSACTION_TIMEOUT_S
            if raced or append.retries < MAX_RETRIES:
                # An ANY append lost a race, or an append with the same event ids is in
                # flight elsewhere: once that one is visible, the next round explains.
                append.retries += 1
                return True
            if moved:
                request = moved[0]
                actual = await self.versions.head(request.stream)
                append.fail(ConcurrencyError(request.stream, request.expected_version, actual))
            else:
                append.fail(BulkWriteError({"writeErrors": errors, "nInserted": 0}))
        except Exception as exc:
            append.fail(exc)
        return False

    async def settled_before(self, append: PendingAppend, *, archived: bool = False) -> bool:
        """Settle `append` when its event ids were recorded before (an idempotent retry)."""
        try:
            earlier = await recorded_before(
                self.events, self.archive, append.requests, archived=archived
            )
        except DuplicateEventError as exc:
            append.fail(exc)
            return True
        if earlier is None:
            return False
        append.succeed(earlier)
        return True


async def recorded_before(
    events: AsyncCollection[Document],
    archive: Archive | None,
    requests: Sequence[AppendRequest],
    *,
    archived: bool = False,
) -> list[list[RecordedEvent]] | None:
    """The recorded events when every id of this append was recorded before, else None.

    `archived`: look in the archive too (an append to an archived stream)."""
    ids = [e.event_id for r in requests for e in r.events]
    cursor = events.find({"eventId": {"$in": ids}}).sort("sequence", ASCENDING)
    found = {doc["eventId"]: RecordedEvent.from_document(doc) async for doc in cursor}
    missing = [i for i in ids if i not in found]
    if missing and archived and archive is not None:
        moved = archive.events.find({"eventId": {"$in": missing}})
        found |= {doc["eventId"]: RecordedEvent.from_document(doc) async for doc in moved}
    if not found:
        return None
    result = []
    for request in requests:
        recorded = [found.get(e.event_id) for e in request.events]
        if any(
            e is None
            or e.aggregate_type != request.aggregate_type
            or e.aggregate_id != request.aggregate_id
            for e in recorded
        ):
            raise DuplicateEventError(
                f"some event ids of this append were recorded before, but not as this same "
                f"append: {sorted(found)[:5]}"
            )
        result.append([dataclasses.replace(e, replayed=True) for e in recorded if e is not None])
    return result
