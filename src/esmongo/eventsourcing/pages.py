"""Pages of notifications that can no longer change, kept to be served again without a query.

Notification ids are gap-free and in commit order, and stored events are never updated: a
range `low..high` read whole (every id present, no topic filter) holds the same events for as
long as the log is the same log. Followers read their leaders' pages, each follower the same
ones, and a poller of a fixed position reads one page again and again: those reads need
not reach the server (the embedded server is one process, whose time pollers take from
writers: docs/eventsourcing.md).

A log is replaced only by operations that move its counter's generation (a restore, a drop
found by `EventStore.init`; archiving, migration and repair refuse logs of their own) or by
a hand-made drop of the database. So the pages are dropped when what the recorder sees
contradicts them: a generation other than the one they were read under (the recorder sees
the counter on its own appends and on every head read), or a head below a cached page (a
read that found the log shorter, or an append numbered below it). docs/adr/0011 (addendum
"complete pages") says what is left.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from eventsourcing.persistence import Notification

CAPACITY = 16 * 1024 * 1024
"""Bytes of notifications kept at most, over all pages (least recently used pages go
first): each counts its state's length plus NOTIFICATION_BYTES."""
NOTIFICATION_BYTES = 200
"""What a notification costs besides its state (ids, topic, objects), near enough."""

Page = tuple[Notification, ...]


class CompletePages:
    """Complete pages of one log, keyed by their range; thread-safe (the library reads
    from many threads)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[int, int], Page] = OrderedDict()
        self._held = 0
        self._highest = 0
        """The highest id of a cached page: the log's head is at least this."""
        self._generation: Hashable | None = None
        self._epoch = 0
        """Moves whenever the pages are dropped: a read that began before does not put."""

    def epoch(self) -> int:
        """To pass to `put`: taken before the read that fills a page."""
        with self._lock:
            return self._epoch

    def get(self, low: int, high: int) -> list[Notification] | None:
        with self._lock:
            page = self._pages.get((low, high))
            if page is None:
                return None
            self._pages.move_to_end((low, high))
            return list(page)

    def put(self, low: int, high: int, found: Sequence[Notification], epoch: int) -> None:
        """Keep `found`, read from `low` to `high`, if it is complete: every id of the range,
        in order. A read that found the log shorter than a cached page drops them all."""
        complete = len(found) == high - low + 1 and all(
            n.id == low + i for i, n in enumerate(found)
        )
        with self._lock:
            if epoch != self._epoch:
                return
            if not complete:
                last = found[-1].id if found else low - 1
                if last < min(high, self._highest):
                    self._drop()
                return
            weight = _weight(found)
            if weight > self._capacity or (low, high) in self._pages:
                return
            self._pages[low, high] = tuple(found)
            self._held += weight
            self._highest = max(self._highest, high)
            while self._held > self._capacity:
                _, evicted = self._pages.popitem(last=False)
                self._held -= _weight(evicted)

    def seen(self, generation: Hashable | None = None, head: int | None = None) -> None:
        """What the recorder saw of the log elsewhere: its counter's generation (None: not
        seen), and a head it is at least at (the counter's value, or the id before an
        append's first). Drops the pages when that contradicts them."""
        with self._lock:
            if generation is not None and generation != self._generation:
                # Pages read before any generation was seen are dropped too: they may be
                # older than it.
                self._drop()
                self._generation = generation
            if head is not None and head < self._highest:
                self._drop()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)

    def _drop(self) -> None:
        self._pages.clear()
        self._held = 0
        self._highest = 0
        self._epoch += 1


def _weight(page: Sequence[Notification]) -> int:
    return sum(len(n.state) + NOTIFICATION_BYTES for n in page)
