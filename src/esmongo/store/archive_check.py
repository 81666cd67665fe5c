"""Whether a batch's streams are archived, checked in its transaction as cheaply as the
counter allows.

Archived streams (esmongo.store.archive) take no event. A stream the version check found empty
(NO_STREAM, ANY on a new stream) may be an archived one, so the transaction looks those
up in `archived_streams`. Streams it found events for cannot have been archived since,
unless an archive committed in between: archives increment `archives` on the counter
document that the transaction increments first, so the transaction reads that number for
free, and only when it moved since the version check are all the batch's streams looked up.
"""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession

from esmongo.events import StreamId
from esmongo.store.archive import Archive
from esmongo.store.pending import PendingAppend


class ArchivedInBatch(Exception):
    """Raised inside a batch's transaction: these streams are archived."""

    def __init__(self, streams: set[StreamId]) -> None:
        super().__init__(f"archived: {sorted(map(str, streams))}")
        self.streams = streams


async def refuse_archived(
    archive: Archive,
    batch: list[PendingAppend],
    known: int | None,
    archives: int,
    session: AsyncClientSession,
) -> None:
    """Raise ArchivedInBatch when a stream of the batch is archived.

    `archives` is the counter's number of archives as the transaction read it, `known` as
    it was read before the version check (None: not read yet).
    """
    if archives == 0:
        return  # nothing was ever archived
    mirror = await archive.mirror(archives, session)
    if mirror is not None:  # exact as of `archives`, and no round trip: check them all
        streams = [r.stream for append in batch for r in append.requests]
        archived = {s for s in streams if mirror.get(s, archives + 1) <= archives}
    else:
        every = known != archives
        streams = [
            request.stream
            for append in batch
            for request, head in zip(append.requests, append.heads, strict=True)
            if every or head == 0
        ]
        archived = await archive.archived(streams, session)
    if archived:
        raise ArchivedInBatch(archived)
