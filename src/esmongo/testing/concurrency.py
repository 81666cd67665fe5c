"""Concurrent writers: one winner per version, nothing lost, and a global sequence that is
gap-free and commit-ordered (a reader that has seen N has seen everything below N)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import ConcurrencyError
from esmongo.events import ANY, NO_STREAM, STREAM_EXISTS, Expected, NewEvent, RecordedEvent
from esmongo.store import AppendRequest, EventStore
from esmongo.testing.base import StoreCase, all_events, assert_gap_free, new_events


class ConcurrencyCases(StoreCase):
    """Many tasks appending at once, through one store and through two."""

    async def test_concurrent_writers_on_one_stream_have_exactly_one_winner(
        self, store: EventStore
    ) -> None:
        results = await asyncio.gather(
            *[
                store.append("t", "x", new_events(2, writer=i), NO_STREAM)
                for i in range(self.writers)
            ],
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, list)]
        losers = [r for r in results if isinstance(r, ConcurrencyError)]
        assert len(winners) == 1
        assert len(losers) == self.writers - 1
        assert all(e.actual == 2 and e.expected is NO_STREAM for e in losers)
        assert await all_events(store) == winners[0]

    async def test_concurrent_writers_on_one_stream_with_optimistic_retries(
        self, store: EventStore
    ) -> None:
        """Each writer appends with the version it read; on a conflict it reads again.
        Every version has exactly one winner; no write is lost or duplicated."""
        per_writer = 4
        conflicts = 0

        async def writer(w: int) -> list[RecordedEvent]:
            nonlocal conflicts
            mine: list[RecordedEvent] = []
            for k in range(per_writer):
                batch = [NewEvent("thing.happened", {"writer": w, "k": k})]
                while True:
                    version = await store.stream_version("t", "x")
                    try:
                        mine += await store.append("t", "x", batch, version)
                        break
                    except ConcurrencyError as exc:
                        assert exc.actual > version
                        conflicts += 1
            return mine

        written = await asyncio.gather(*[writer(w) for w in range(self.writers)])
        stored = await all_events(store)
        assert len(stored) == self.writers * per_writer
        assert_gap_free(stored)
        assert sorted(e.event_id for w in written for e in w) == sorted(e.event_id for e in stored)
        assert sorted((e.data["writer"], e.data["k"]) for e in stored) == [
            (w, k) for w in range(self.writers) for k in range(per_writer)
        ]
        # A writer's own events are in its order within the stream.
        for w in range(self.writers):
            assert [e.data["k"] for e in stored if e.data["writer"] == w] == list(range(per_writer))
        assert conflicts > 0, "the writers did not race"
        assert await store.head_sequence() == len(stored)

    async def test_concurrent_writers_on_different_streams_lose_nothing(
        self, store: EventStore
    ) -> None:
        per_writer = 6

        async def writer(w: int) -> list[RecordedEvent]:
            mine: list[RecordedEvent] = []
            for k in range(per_writer):
                expected: Expected = NO_STREAM if k == 0 else 2 * k
                mine += await store.append("t", f"s{w}", new_events(2, writer=w, k=k), expected)
            return mine

        written = await asyncio.gather(*[writer(w) for w in range(self.writers)])
        stored = await all_events(store)
        assert len(stored) == self.writers * per_writer * 2
        assert_gap_free(stored)
        assert sorted(e.sequence for w in written for e in w) == [e.sequence for e in stored]
        for w, mine in enumerate(written):
            assert [e.aggregate_version for e in mine] == list(range(1, 2 * per_writer + 1))
            assert all(e.aggregate_id == f"s{w}" for e in mine)
            # One append's events get consecutive sequence numbers.
            for first, second in zip(mine[::2], mine[1::2], strict=True):
                assert second.sequence == first.sequence + 1
        assert await store.head_sequence() == len(stored)

    async def test_mixed_concurrent_appends_keep_the_sequence_gap_free(
        self, store: EventStore
    ) -> None:
        """Same-stream racers, different-stream writers and multi-stream appends at once."""

        async def racer(i: int) -> int:
            try:
                await store.append("race", "one", new_events(1), NO_STREAM)
                return 1
            except ConcurrencyError:
                return 0

        async def pair(i: int) -> int:
            await store.append_streams(
                [
                    AppendRequest("pair", f"a{i}", new_events(2)),
                    AppendRequest("pair", f"b{i}", new_events(1)),
                ]
            )
            return 3

        async def solo(i: int) -> int:
            await store.append("solo", f"s{i}", new_events(3))
            return 3

        jobs = [f(i) for i in range(self.writers) for f in (racer, pair, solo)]
        written = sum(await asyncio.gather(*jobs))
        stored = await all_events(store)
        assert written == len(stored) == 1 + self.writers * 6
        assert_gap_free(stored)
        assert await store.stream_version("race", "one") == 1

    async def test_readers_never_see_a_gap_while_writers_commit(self, store: EventStore) -> None:
        """A reader that has seen sequence N has seen every event below N."""
        appends = 10
        done = asyncio.Event()
        seen: list[int] = []

        async def writer(w: int) -> None:
            for _ in range(appends):
                await store.append("t", f"s{w}", new_events(2))

        async def reader() -> None:
            while True:
                finished = done.is_set()
                after = seen[-1] if seen else 0
                batch = [e.sequence async for e in store.read_all(after)]
                # Whatever is visible continues the checkpoint with no hole.
                assert batch == list(range(after + 1, after + 1 + len(batch)))
                seen.extend(batch)
                if finished:
                    return
                await asyncio.sleep(0)

        reading = asyncio.create_task(reader())
        await asyncio.gather(*[writer(w) for w in range(self.writers)])
        done.set()
        await reading
        assert seen == list(range(1, self.writers * appends * 2 + 1))

    # ---- two processes: two stores on one database ------------------------------------

    async def test_two_stores_see_each_others_appends(self, db: AsyncDatabase[Document]) -> None:
        """What one store remembers of a stream never hides another store's appends."""
        a, b = self.make_store(db), self.make_store(db)
        await a.init()
        await a.append("t", "x", new_events(2), NO_STREAM)
        assert [e.aggregate_version async for e in a.read_stream("t", "x")] == [1, 2]
        await b.append("t", "x", new_events(1), 2)
        with pytest.raises(ConcurrencyError) as caught:
            await a.append("t", "x", new_events(1), 2)
        assert (caught.value.expected, caught.value.actual) == (2, 3)
        with pytest.raises(ConcurrencyError):
            await a.append("t", "x", new_events(1), NO_STREAM)
        (fourth,) = await a.append("t", "x", new_events(1), 3)
        (fifth,) = await b.append("t", "x", new_events(1), ANY)
        (sixth,) = await a.append("t", "x", new_events(1), STREAM_EXISTS)
        assert [e.aggregate_version for e in (fourth, fifth, sixth)] == [4, 5, 6]
        batch = new_events(2)
        first = await a.append("t", "y", batch)
        assert await b.append("t", "y", batch) == first  # a retry through the other store
        stored = await all_events(a)
        assert len(stored) == 8
        assert_gap_free(stored)
        assert await b.head_sequence() == 8

    async def test_concurrent_writers_in_two_stores_keep_one_gap_free_sequence(
        self, db: AsyncDatabase[Document]
    ) -> None:
        stores = [self.make_store(db), self.make_store(db)]
        await stores[0].init()
        appends = 5

        async def writer(w: int) -> None:
            store = stores[w % 2]
            for k in range(appends):
                await store.append("t", f"s{w}", new_events(2, k=k), 2 * k)
                await store.append("t", "shared", new_events(1, w=w, k=k), ANY)

        await asyncio.gather(*[writer(w) for w in range(self.writers)])
        stored = await all_events(stores[1])
        assert len(stored) == self.writers * appends * 3
        assert_gap_free(stored)
        shared = [e async for e in stores[0].read_stream("t", "shared")]
        assert [e.aggregate_version for e in shared] == list(range(1, self.writers * appends + 1))
