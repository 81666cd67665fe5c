"""The event store: the write path and the read path. It owns its collections.

Write path: `requests` (what an append asks) -> `group_commit` (batches of concurrent
appends) -> `batch_writer` (one transaction per batch: `transactions`, the write `fence`,
`stream_versions`, `archive_check`, the events' `numbering`, the `unit_of_work`'s other
documents, the `inline` projections' writes) -> `events`. Read path: the
`event_store` reads, merged with the `archive`. `writers` and `sessions` keep a dead
process's transaction from stalling the others. `collections` names what it owns.
"""

from esmongo.store.archive import ArchiveReport
from esmongo.store.event_store import EventStore
from esmongo.store.inline import (
    InlineHandlerFailed,
    InlineProjection,
    InlineState,
    InlineSwitch,
    InlineWriteFailed,
)
from esmongo.store.requests import AppendRequest
from esmongo.store.unit_of_work import DocumentWrite, Writes

__all__ = [
    "AppendRequest",
    "ArchiveReport",
    "DocumentWrite",
    "EventStore",
    "InlineHandlerFailed",
    "InlineProjection",
    "InlineState",
    "InlineSwitch",
    "InlineWriteFailed",
    "Writes",
]
