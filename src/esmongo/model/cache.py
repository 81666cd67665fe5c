"""The aggregates a process loaded or saved, kept so that the next load reads only what is
newer (esmongo.model.repository).

An aggregate at version N is the fold of its first N events, and events are never changed:
a kept copy stays a true prefix of the stream whatever other processes append, so it is
never invalidated, only fast-forwarded. What other processes wrote since is read on load
(`read_stream` from N+1, one indexed query, usually empty). A command may instead decide on
the copy as kept, unread (`trusted`): its save expects the copy's version, so a stale copy
costs a conflict, never a lost update; the conflict marks the copy doubted, and it is read
again before it is trusted. The cache holds private copies, so a caller's changes to an
aggregate (events raised and never saved) cannot leak into it.

Bounded by count and by an estimate of the memory the copies hold (ADR 0013); the least
recently used go first.
"""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

from esmongo.model.aggregate import Aggregate

A = TypeVar("A", bound=Aggregate)

MAX_AGGREGATES = 10_000
MAX_BYTES = 32 * 1024 * 1024
"""Estimated bytes held by the kept copies (sys.getsizeof over their object graph)."""


@dataclass
class _Kept(Generic[A]):
    aggregate: A
    size: int
    doubted: bool = False
    """A save from this copy conflicted: another process wrote since."""


class AggregateCache(Generic[A]):
    """Copies of aggregates by id, LRU, bounded by `max_count` and `max_bytes` (estimated).

    An aggregate bigger than `max_bytes` alone is not kept."""

    def __init__(self, max_count: int = MAX_AGGREGATES, max_bytes: int = MAX_BYTES) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(
                f"an aggregate cache needs room: max_count={max_count}, max_bytes={max_bytes}"
            )
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[str, _Kept[A]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, aggregate_id: str) -> A | None:
        """A private copy of the kept aggregate, or None."""
        kept = self._kept.get(aggregate_id)
        if kept is None:
            return None
        self._kept.move_to_end(aggregate_id)
        return copy.deepcopy(kept.aggregate)

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
        if kept is not None and kept.aggregate.version == version:
            kept.doubted = False

    def put(self, aggregate: A) -> None:
        """Keep a copy of `aggregate`, which must have no unsaved event."""
        if aggregate.uncommitted_events:
            raise ValueError(f"{aggregate.id}: an aggregate with unsaved events is not kept")
        known = self._kept.get(aggregate.id)
        if known is not None and known.aggregate.version > aggregate.version:
            return  # a later load or save kept a newer one
        kept = copy.deepcopy(aggregate)
        size = estimated_size(kept)
        self.discard(aggregate.id)
        if size > self.max_bytes:
            return
        self._kept[aggregate.id] = _Kept(kept, size)
        self.bytes += size
        while len(self._kept) > self.max_count or self.bytes > self.max_bytes:
            _, oldest = self._kept.popitem(last=False)
            self.bytes -= oldest.size

    def discard(self, aggregate_id: str) -> None:
        kept = self._kept.pop(aggregate_id, None)
        if kept is not None:
            self.bytes -= kept.size

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0


_LEAVES = (str, bytes, int, float, bool, Decimal, type(None))


def estimated_size(root: object) -> int:
    """Bytes held by an object graph, roughly: getsizeof of each object reached through
    containers and instance dicts, each counted once."""
    seen: set[int] = set()
    stack: list[object] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, _LEAVES):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            stack.append(attributes)
    return total
