"""SharedSource reads the next range ahead while catching up, and serves exactly what a
straight read would."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.bank import bank_projections
from esmongo.projections.source import SharedSource
from projection_helpers import BankLoad

Db = AsyncDatabase[dict[str, Any]]


async def _catch_up_reads(source: SharedSource, types: list[str], start: int = 0) -> list[int]:
    """The sequences a runner would apply, reading window after window to the head."""
    position, seen = start, []
    while True:
        window = await source.read(position, 500, types)
        if window.complete <= position:
            return seen
        seen += [e.sequence for e in window.events]
        position = window.complete


async def test_catching_up_reads_each_range_once_and_misses_nothing(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    await BankLoad(store, seed=2).append(1200)
    head = await store.head_sequence()
    types = sorted({t for p in bank_projections() for t in p.event_types})
    expected = [e.sequence async for e in store.read_all(0, event_types=types)]

    source = SharedSource(store, fetch_size=500)
    source.register(types)
    first = await source.read(0, 500, types)
    assert first.complete == 500 and source.reading_ahead == 500  # before anyone asks
    rest = await _catch_up_reads(source, types, start=500)
    assert [e.sequence for e in first.events] + rest == expected
    assert source.reading_ahead is None  # nothing left to read ahead at the head
    ranges = -(-head // 500)
    # One read a range: the ranges after the first were read ahead, and used.
    assert source.fetches == ranges


async def test_a_read_ahead_of_another_range_is_not_served(db: Db) -> None:
    """A runner that jumps (a checkpoint moved by someone else) gets a read of its own."""
    store = EventStore(db)
    await store.init()
    await BankLoad(store, seed=4).append(1500)
    types = sorted({t for p in bank_projections() for t in p.event_types})
    source = SharedSource(store, fetch_size=500, capacity=500)
    source.register(types)
    first = await source.read(0, 500, types)  # reads (0, 500], and (500, 1000] ahead
    assert first.complete == 500
    jump = 1100
    expected = [e.sequence async for e in store.read_all(jump, event_types=types)]
    assert await _catch_up_reads(source, types, start=jump) == expected
