"""The aggregates a process loaded or saved, kept so that the next load reads only what is
newer (esmongo.model.repository).

An aggregate at version N is the fold of its first N events, and events are never changed:
a kept copy stays a true prefix of the stream whatever other processes append, so it is
never invalidated, only fast-forwarded. What other processes wrote since is read on load
(`read_stream` from N+1, one indexed query, usually empty). A command may instead decide on
the copy as kept, unread (`trusted`): its save expects the copy's version, so a stale copy
costs a conflict, never a lost update; the conflict marks the copy doubted, and it is read
again before it is trusted.

The cache keeps each aggregate pickled: bytes cannot be changed, so a caller's changes to an
aggregate (events raised and never saved) cannot leak into it, every `get` hands out a copy of
its own, and the memory the cache holds is the bytes it counts. A pickle round trip costs about
a third of the two deep copies and the object-graph walk it replaces (ADR 0013). An aggregate
pickle refuses (a class defined in a function, a lock in its state) is not kept: its loads
read the store, and a warning says so once per type.

Bounded by count and by the bytes kept (ADR 0013); the least recently used go first.
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from esmongo.model.aggregate import Aggregate

A = TypeVar("A", bound=Aggregate)

MAX_AGGREGATES = 10_000
MAX_BYTES = 32 * 1024 * 1024
"""Bytes held by the kept copies (their pickles)."""

log = logging.getLogger(__name__)
_unpicklable: set[type] = set()


@dataclass
class _Kept:
    frozen: bytes
    version: int
    doubted: bool = False
    """A save from this copy conflicted: another process wrote since."""


class AggregateCache(Generic[A]):
    """Copies of aggregates by id, LRU, bounded by `max_count` and `max_bytes`.

    An aggregate bigger than `max_bytes` alone is not kept."""

    def __init__(self, max_count: int = MAX_AGGREGATES, max_bytes: int = MAX_BYTES) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(
                f"an aggregate cache needs room: max_count={max_count}, max_bytes={max_bytes}"
            )
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, aggregate_id: str) -> A | None:
        """A private copy of the kept aggregate, or None."""
        kept = self._kept.get(aggregate_id)
        if kept is None:
            return None
        self._kept.move_to_end(aggregate_id)
        aggregate: A = pickle.loads(kept.frozen)
        return aggregate

    def trusted(self, aggregate_id: str) -> A | None:
        """A private copy to decide on without reading, or None: none kept, or doubted."""
        kept = self._kept.get(aggregate_id)
        return None if kept is None or kept.doubted else self.get(aggregate_id)

    def doubt(self, aggregate_id: str) -> None:
        """A save from the kept copy conflicted: read what is newer before trusting it."""
        kept = self._kept.get(aggregate_id)
        if kept is not None:
            kept.doubted = True

    def confirm(self, aggregate_id: str, version: int) -> None:
        """A load read nothing after `version`: a kept copy at that version is current again.

        Doubt only saves conflicts: every save expects its copy's version, so a copy
        trusted too early costs a conflict, never a lost update."""
        kept = self._kept.get(aggregate_id)
        if kept is not None and kept.version == version:
            kept.doubted = False

    def put(self, aggregate: A) -> None:
        """Keep a copy of `aggregate`, which must have no unsaved event."""
        if aggregate.uncommitted_events:
            raise ValueError(f"{aggregate.id}: an aggregate with unsaved events is not kept")
        known = self._kept.get(aggregate.id)
        if known is not None and known.version > aggregate.version:
            return  # a later load or save kept a newer one
        self.discard(aggregate.id)
        frozen = _frozen(aggregate)
        if frozen is None or _size(frozen) > self.max_bytes:
            return
        self._kept[aggregate.id] = _Kept(frozen, aggregate.version)
        self.bytes += _size(frozen)
        while len(self._kept) > self.max_count or self.bytes > self.max_bytes:
            _, oldest = self._kept.popitem(last=False)
            self.bytes -= _size(oldest.frozen)

    def discard(self, aggregate_id: str) -> None:
        kept = self._kept.pop(aggregate_id, None)
        if kept is not None:
            self.bytes -= _size(kept.frozen)

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0


def _size(frozen: bytes) -> int:
    return sys.getsizeof(frozen)


def _frozen(aggregate: Aggregate) -> bytes | None:
    try:
        return pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        kind = type(aggregate)
        if kind not in _unpicklable:
            _unpicklable.add(kind)
            log.warning(
                "%s.%s cannot be pickled (%s): the aggregate cache keeps none of them, "
                "their loads read the store",
                kind.__module__,
                kind.__qualname__,
                exc,
            )
        return None
