"""Inline projections: read-model writes that commit in the transaction of their events.

Which projections are inline right now is recorded on the sequence counter document
(`inline.<name>`), the one document every append transaction writes first: a batch reads
it for free (the `$inc` returns it) and applies, in its own transaction, each inline
projection this process has registered. Appends are serialized on that document, so the
projection sees every event after the hand-over exactly once, in sequence order, whichever
process appended it.

A projection becomes inline only from a position equal to the counter's value (the async
runner caught up, nobody appended since: `InlineSwitch.enable` is a compare-and-set on
it), and stops being inline by a write to the counter (`disable`), so an append commits
either before the switch (and is applied one way) or after it (the other way): no gap, no
double apply. A process that appends an event an inline projection handles without having
registered it switches the projection off in its transaction, at the sequence before its
batch (`inlineOff.<name>`): the async runner then takes over from there.

The projections layer builds the appliers (esmongo.projections.inline); this module only
knows the protocol and the counter's fields.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import RecordedEvent
from esmongo.store.collections import COUNTERS
from esmongo.store.transactions import DURABLE, SEQUENCE_COUNTER
from esmongo.store.unit_of_work import DocumentWrite, by_collection

log = logging.getLogger(__name__)

INLINE = "inline"
"""Counter field: projection name -> {since, types} while it is inline."""
INLINE_OFF = "inlineOff"
"""Counter field: projection name -> the last sequence it was applied inline up to, when
an append switched it off (its async runner goes on from there)."""


class InlineHandlerFailed(Exception):
    """An inline projection's handler raised on an event of one append of a batch."""

    def __init__(self, projection: str, index: int, event: RecordedEvent, cause: Exception):
        super().__init__(
            f"inline projection {projection} failed on {event.event_type} "
            f"{event.aggregate_type}/{event.aggregate_id}@{event.aggregate_version}: {cause}"
        )
        self.projection = projection
        self.index = index
        """Which append of the batch (position in the list given to `writes`)."""
        self.event = event
        self.cause = cause


class InlineWriteFailed(Exception):
    """The server refused an inline projection's merged writes for a batch."""

    def __init__(self, projection: str, cause: PyMongoError) -> None:
        super().__init__(f"inline projection {projection}: its writes failed: {cause}")
        self.projection = projection
        self.cause = cause


class InlineProjection(Protocol):
    """What the batch writer needs of an inline projection."""

    @property
    def name(self) -> str: ...

    @property
    def event_types(self) -> Collection[str]: ...

    async def writes(self, appends: Sequence[Sequence[RecordedEvent]]) -> list[DocumentWrite]:
        """The read-model writes of these appends' events (those of its types, in sequence
        order), merged per document. Raises InlineHandlerFailed naming the append."""
        ...


@dataclass(frozen=True)
class InlineState:
    """A projection's inline state on the counter, as read once."""

    inline: bool
    head: int
    """The counter's value when read: with `inline`, everything up to it is applied."""
    since: int | None = None
    """The position it became inline at (while inline)."""
    off_at: int | None = None
    """Set when an append switched it off: it was applied up to there."""


def inline_names(counter: Mapping[str, Any]) -> dict[str, Collection[str]]:
    """Inline projection name -> the event types it handles, from a counter document."""
    found = counter.get(INLINE) or {}
    return {name: tuple(entry.get("types") or ()) for name, entry in found.items()}


class InlineSwitch:
    """Reads and moves projections' inline state on the counter document."""

    def __init__(
        self, counters: AsyncCollection[Document], counter_id: str = SEQUENCE_COUNTER
    ) -> None:
        self.counters = counters
        self.counter_id = counter_id

    @classmethod
    def of(cls, db: AsyncDatabase[Document]) -> InlineSwitch:
        """The switch of the database's main log."""
        return cls(db.get_collection(COUNTERS, write_concern=DURABLE))

    async def state(self, name: str, session: AsyncClientSession | None = None) -> InlineState:
        counter = await self.counters.find_one({"_id": self.counter_id}, session=session)
        return _state(counter or {}, name)

    async def enable(
        self, name: str, types: Collection[str], position: int, session: AsyncClientSession
    ) -> bool:
        """Make `name` inline from `position`, in the caller's transaction; False (nothing
        written) unless the counter's value is `position`: events were appended since."""
        result = await self.counters.update_one(
            {"_id": self.counter_id, "value": position},
            {
                "$set": {f"{INLINE}.{name}": {"since": position, "types": sorted(types)}},
                "$unset": {f"{INLINE_OFF}.{name}": ""},
            },
            session=session,
        )
        return result.matched_count == 1

    async def disable(self, name: str, session: AsyncClientSession) -> InlineState:
        """Stop `name` being inline, in the caller's transaction; its state before. The
        read model holds everything up to `head` when it was inline, `off_at` when an
        append had switched it off already."""
        before = await self.counters.find_one_and_update(
            {"_id": self.counter_id},
            {"$unset": {f"{INLINE}.{name}": "", f"{INLINE_OFF}.{name}": ""}},
            return_document=ReturnDocument.BEFORE,
            session=session,
        )
        return _state(before or {}, name)


def _state(counter: Mapping[str, Any], name: str) -> InlineState:
    entry = (counter.get(INLINE) or {}).get(name)
    off = (counter.get(INLINE_OFF) or {}).get(name)
    head = int(counter.get("value", 0))
    if entry is not None:
        return InlineState(True, head, since=int(entry.get("since", 0)))
    return InlineState(False, head, off_at=None if off is None else int(off))


class InlineAppliers:
    """The inline projections a store applies, and how far its batches applied each."""

    def __init__(self, counters: AsyncCollection[Document], counter_id: str) -> None:
        self.counters = counters
        self.counter_id = counter_id
        self.registered: dict[str, InlineProjection] = {}
        self.through: dict[str, int] = {}
        """Per projection, the last sequence of a batch committed with it applied: its read
        model held every event up to there at that commit."""

    def committed(self, names: Sequence[str], last: int) -> None:
        for name in names:
            self.through[name] = max(self.through.get(name, 0), last)

    async def apply(
        self,
        recorded: Sequence[Sequence[Sequence[RecordedEvent]]],
        counter: Mapping[str, Any],
        before: int,
        session: AsyncClientSession,
    ) -> list[str]:
        """In a batch's transaction, after its events: apply each projection the counter
        (as the batch's `$inc` returned it) says is inline; the names applied. One not
        registered here is switched off when the batch has events of its types.
        `recorded`: per append, per stream, the events; `before`: the last sequence
        before the batch. Raises InlineHandlerFailed or InlineWriteFailed."""
        applied = []
        for name, types in inline_names(counter).items():
            projection = self.registered.get(name)
            if projection is None:
                if any(e.event_type in types for a in recorded for s in a for e in s):
                    await self._switch_off(name, before, session)
                continue
            handled = set(projection.event_types)
            appends = [[e for s in a for e in s if e.event_type in handled] for a in recorded]
            if any(appends):
                writes = await projection.writes(appends)
                try:
                    for collection, operations in by_collection(writes):
                        target = self.counters.database.get_collection(
                            collection, codec_options=CODEC_OPTIONS
                        )
                        await target.bulk_write(operations, ordered=True, session=session)
                except PyMongoError as exc:
                    raise InlineWriteFailed(name, exc) from exc
            applied.append(name)
        return applied

    async def _switch_off(self, name: str, before: int, session: AsyncClientSession) -> None:
        log.warning(
            "projection %s is inline but this process does not apply it: switched off "
            "at %d (its async runner goes on from there)",
            name,
            before,
        )
        await self.counters.update_one(
            {"_id": self.counter_id},
            {"$unset": {f"{INLINE}.{name}": ""}, "$set": {f"{INLINE_OFF}.{name}": before}},
            session=session,
        )
