"""A retried append: are all its event ids recorded already, as this same append?

Event ids are unique, so an append whose ids were all recorded is a retry of one that
committed (its caller never heard back): it gets that first recording, and writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document
from esmongo.errors import DuplicateEventError
from esmongo.events import RecordedEvent
from esmongo.store.archive import Archive
from esmongo.store.requests import AppendRequest


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
