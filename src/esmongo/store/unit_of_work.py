"""A unit of work: documents that commit in an append's transaction, or not at all.

An idempotency record, a tracking record or an inline projection's writes must exist if and
only if the events they answer for do. `EventStore.append(..., writes=...)` takes them;
they are written after the events, in the same transaction (group commit included). When
one append's writes fail for a reason of their own (a duplicate key, a validator), that
append alone fails, with nothing of it written, and the rest of its batch commits. An
idempotent retry (every event id recorded before) writes nothing: the first recording
committed its writes with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

from esmongo.events import RecordedEvent

Operation: TypeAlias = (
    InsertOne[Any] | ReplaceOne[Any] | UpdateOne | UpdateMany | DeleteOne | DeleteMany
)


@dataclass(frozen=True)
class DocumentWrite:
    """One write to a collection of the store's main database (never the log database:
    esmongo.store.layout), inside an append's transaction."""

    collection: str
    operation: Operation


Writes: TypeAlias = (
    Sequence[DocumentWrite] | Callable[[list[list[RecordedEvent]]], Sequence[DocumentWrite]]
)
"""The writes themselves, or a function of the recorded events (one list per stream
appended to) that returns them, for writes that carry sequences or versions."""


def resolve(writes: Writes | None, recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
    if writes is None:
        return []
    found = writes(recorded) if callable(writes) else writes
    for index, write in enumerate(found):
        if not isinstance(write, DocumentWrite):
            raise TypeError(f"writes[{index}] is a {type(write).__name__}, not a DocumentWrite")
    return list(found)


def by_collection(writes: Sequence[DocumentWrite]) -> list[tuple[str, list[Operation]]]:
    """Consecutive writes to one collection go as one ordered bulk_write, in order."""
    runs: list[tuple[str, list[Operation]]] = []
    for write in writes:
        if runs and runs[-1][0] == write.collection:
            runs[-1][1].append(write.operation)
        else:
            runs.append((write.collection, [write.operation]))
    return runs
