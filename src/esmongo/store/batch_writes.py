"""What commits in a batch's transaction beside its events: each append's unit-of-work
writes (esmongo.store.unit_of_work) and the inline projections' writes
(esmongo.store.inline). Both see the events as their callers gave them, personal fields in
clear (a read model must not store ciphertext: esmongo.store.personal). A failure here is
raised as one the batch writer (esmongo.store.batch_writer) knows how to settle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.events import RecordedEvent
from esmongo.store.inline import InlineAppliers, InlineHandlerFailed, InlineWriteFailed
from esmongo.store.pending import PendingAppend
from esmongo.store.transactions import transient
from esmongo.store.unit_of_work import by_collection, resolve


class WritesFailed(Exception):
    """Raised inside a batch's transaction: the unit-of-work writes of one append failed."""

    def __init__(self, append: PendingAppend, cause: Exception) -> None:
        super().__init__(f"an append's writes failed: {cause}")
        self.append = append
        self.cause = cause


class SplitBatch(Exception):
    """Raised inside a batch's transaction: an inline projection's merged writes failed
    and no one append owns the failure; each append goes again alone (BatchWriter.flush)."""


async def write_also(
    database: AsyncDatabase[Document],
    append: PendingAppend,
    recorded: list[list[RecordedEvent]],
    session: AsyncClientSession,
) -> None:
    """The append's unit-of-work writes, in the batch's transaction (WritesFailed)."""
    try:
        for name, operations in by_collection(resolve(append.writes, clear(append, recorded))):
            await database[name].bulk_write(operations, ordered=True, session=session)
    except Exception as exc:
        raise WritesFailed(append, exc) from exc


async def write_inline(
    inline: InlineAppliers,
    batch: list[PendingAppend],
    recorded: list[list[list[RecordedEvent]]],
    counter: Mapping[str, Any],
    before: int,
    session: AsyncClientSession,
) -> list[str]:
    """The inline projections (InlineAppliers.apply): a handler's failure fails its
    append alone; a merged write's, unless transient, splits the batch."""
    views = [clear(append, streams) for append, streams in zip(batch, recorded, strict=True)]
    try:
        return await inline.apply(views, counter, before, session)
    except InlineHandlerFailed as exc:
        raise WritesFailed(batch[exc.index], exc) from exc
    except InlineWriteFailed as exc:
        if transient(exc.cause):
            raise WritesFailed(batch[0], exc.cause) from exc  # the whole batch again
        if len(batch) == 1:
            raise WritesFailed(batch[0], exc) from exc
        raise SplitBatch(str(exc)) from exc


def clear(append: PendingAppend, recorded: list[list[RecordedEvent]]) -> list[list[RecordedEvent]]:
    """The append's events with personal fields in clear, as the caller gave them."""
    if append.clear is None:
        return recorded
    return [[append.clear(e) for e in events] for events in recorded]
