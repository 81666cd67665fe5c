"""Checking what many appends expect of their streams, before their one transaction.

An append expecting version N must find the stream at exactly N when it commits. That is
two facts, checked in two places:
- "version N+1 does not exist": the unique (aggregateType, aggregateId, aggregateVersion)
  index, when the transaction inserts N+1. A concurrent winner makes the insert fail.
- "version N exists": events are never deleted, so once true it stays true, and it can be
  checked before the transaction, outside it, for the whole batch.

Checking "N exists" could cost one indexed lookup per stream. But most appends go to a
stream this process has just written, so the store remembers, per stream, one event it saw
there (version and sequence). Events leave the collection only through operations that
move the counter document's generation (esmongo.store.fence.generation: archives, fence
closings, repairs, restores). An event this process wrote in a transaction that read
generation G is therefore still there while the counter says G: such a memory is trusted
with no query, and the transaction, which reads the counter anyway, refuses the batch when
the generation moved (it then goes again, checked as below). That takes the round trip out
of every exact-version append to a stream this process wrote (ADR 0013).

An event remembered from a read (which may have come from the archive) is only a hint:
version N <= that version exists if that event still exists in the collection, and one
`{_id: {$in: [...]}}` query confirms that for a whole batch (MongoDB has no multi-point
find that every server runs through an index; on the embedded server an `$or` of streams
is a collection scan).

ANY and STREAM_EXISTS need the head itself, which neither proves. They take the trusted or
confirmed remembered version as the head, optimistically: if the stream moved on since,
the insert of the next version fails on the unique index, the batch writer forgets the
stream and the append goes again, this time after a head query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.read_concern import ReadConcern

from esmongo.codec import Document
from esmongo.errors import ConcurrencyError
from esmongo.events import ANY, NO_STREAM, STREAM_EXISTS, StreamId
from esmongo.store.fence import Generation
from esmongo.store.requests import AppendRequest

REMEMBERED_STREAMS = 50_000
"""Streams whose last seen event is kept (LRU); about 150 bytes each."""


@dataclass(frozen=True)
class Seen:
    """An event known to be in the store: the stream has at least `version` events."""

    version: int
    sequence: int
    written: Generation | None = None
    """The counter's generation when this process wrote the event; None: seen in a read."""


class StreamVersions:
    """Stream heads as the write path needs them: checked in bulk, remembered when seen."""

    def __init__(
        self, events: AsyncCollection[Document], *, capacity: int = REMEMBERED_STREAMS
    ) -> None:
        # Majority: a check must not rely on an event that a failover could roll back.
        self._events = events.with_options(read_concern=ReadConcern("majority"))
        self._seen: OrderedDict[StreamId, Seen] = OrderedDict()
        self._capacity = capacity
        self.generation: Generation | None = None
        """The counter's generation as the last transaction read it (None: not yet)."""

    def remember(
        self,
        stream: StreamId,
        version: int,
        sequence: int,
        written: Generation | None = None,
    ) -> None:
        """Note that `stream` has an event at `version` with this sequence number; with
        `written`, that this process wrote it in a transaction that read that generation."""
        known = self._seen.get(stream)
        if known is not None and (
            known.version > version
            or (known.version == version and known.sequence == sequence and written is None)
        ):
            self._seen.move_to_end(stream)
            return
        self._seen[stream] = Seen(version, sequence, written)
        self._seen.move_to_end(stream)
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def forget(self, stream: StreamId) -> None:
        self._seen.pop(stream, None)

    async def head(self, stream: StreamId) -> int:
        """The stream's current version, 0 when it has no event.

        Bounded below by the version remembered for the stream, when there is one: a
        server may read the whole stream to sort it (the embedded one does), while the
        bounded query reads only what came after. If nothing is
        found at or above it (the collection was replaced), the unbounded query answers.
        """
        seen = self._seen.get(stream)
        if seen is not None:
            found = await self._highest(stream, seen.version)
            if found is not None:
                return found
            self.forget(stream)  # what it remembered is gone
        return await self._highest(stream, None) or 0

    async def _highest(self, stream: StreamId, at_least: int | None) -> int | None:
        query: Document = {
            "aggregateType": stream.aggregate_type,
            "aggregateId": stream.aggregate_id,
        }
        if at_least is not None:
            query["aggregateVersion"] = {"$gte": at_least}
        doc = await self._events.find_one(
            query,
            projection={"aggregateVersion": 1, "_id": 1},
            sort=[("aggregateVersion", DESCENDING)],
        )
        if doc is None:
            return None
        version = int(doc["aggregateVersion"])
        self.remember(stream, version, int(doc["_id"]))
        return version

    async def check(
        self, requests: Sequence[AppendRequest]
    ) -> tuple[list[int | ConcurrencyError], Generation | None]:
        """For each request, the version it appends after, or the conflict that stops it;
        and the generation the counter must still be at for those versions to hold (None:
        nothing was taken on trust).

        Only "the expected version exists" is checked here; the insert checks the rest.
        """
        result: list[int | ConcurrencyError | None] = [None] * len(requests)
        confirm: list[tuple[int, Seen]] = []
        confirmed: dict[int, int] = {}
        trusted = False
        for i, request in enumerate(requests):
            expected = request.expected_version
            seen = self._seen.get(request.stream)
            if request.versions is not None:  # the unique index alone checks them
                result[i] = min(request.versions, default=1) - 1
            elif expected is NO_STREAM or expected == 0:
                result[i] = 0
            elif seen is None or (isinstance(expected, int) and seen.version < expected):
                continue
            elif seen.written is not None and seen.written == self.generation:
                confirmed[i] = seen.version
                trusted = True
            else:
                confirm.append((i, seen))
        confirmed.update(await self._confirm(requests, confirm))
        for i, request in enumerate(requests):
            if result[i] is not None:
                continue
            expected = request.expected_version
            if expected is ANY or expected is STREAM_EXISTS:
                result[i] = confirmed[i] if i in confirmed else await self._at_head(request)
            elif i in confirmed:
                result[i] = await self._at_least(request, confirmed[i])
            else:
                result[i] = await self._probe(request)
        return [r for r in result if r is not None], self.generation if trusted else None

    async def _confirm(
        self, requests: Sequence[AppendRequest], confirm: list[tuple[int, Seen]]
    ) -> dict[int, int]:
        """Which remembered events are still there: request index -> version seen."""
        if not confirm:
            return {}
        cursor = self._events.find(
            {"_id": {"$in": [seen.sequence for _, seen in confirm]}},
            projection={"aggregateType": 1, "aggregateId": 1, "aggregateVersion": 1},
        )
        found = {doc["_id"]: doc async for doc in cursor}
        confirmed: dict[int, int] = {}
        for i, seen in confirm:
            doc = found.get(seen.sequence)
            stream = requests[i].stream
            if (
                doc is not None
                and doc["aggregateType"] == stream.aggregate_type
                and doc["aggregateId"] == stream.aggregate_id
                and doc["aggregateVersion"] == seen.version
            ):
                confirmed[i] = seen.version
            else:
                self.forget(stream)
        return confirmed

    async def _at_least(self, request: AppendRequest, version: int) -> int | ConcurrencyError:
        """The stream has `version` events; it conflicts when that is past what was expected."""
        if version == request.expected_version:
            return version
        return ConcurrencyError(
            request.stream, request.expected_version, await self.head(request.stream)
        )

    async def _probe(self, request: AppendRequest) -> int | ConcurrencyError:
        """One indexed lookup: does the expected version exist?"""
        expected = request.expected_version
        assert isinstance(expected, int)
        stream = request.stream
        doc = await self._events.find_one(
            {
                "aggregateType": stream.aggregate_type,
                "aggregateId": stream.aggregate_id,
                "aggregateVersion": expected,
            },
            projection={"_id": 1},
        )
        if doc is None:
            return ConcurrencyError(stream, expected, await self.head(stream))
        self.remember(stream, expected, int(doc["_id"]))
        return expected

    async def _at_head(self, request: AppendRequest) -> int | ConcurrencyError:
        """ANY and STREAM_EXISTS append after the current head, whatever it is."""
        head = await self.head(request.stream)
        if request.expected_version is STREAM_EXISTS and head == 0:
            return ConcurrencyError(request.stream, request.expected_version, 0)
        return head
