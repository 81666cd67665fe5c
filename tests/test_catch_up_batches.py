"""Catch-up batches sized to the backlog (RunnerOptions.catch_up_batch_size and
catch_up_max_bytes): one batch for a backlog within the budget, cut by the byte budget,
halved when the server refuses the transaction as too large; live batches stay small.
Exactly once throughout: the read models equal the fold of the events."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from esmongo import EventStore
from esmongo.bank import bank_projections
from esmongo.projections import BatchReport, ProjectionRunner, RunnerOptions
from esmongo.projections.source import SharedSource
from projection_helpers import BankLoad, all_events, assert_same, fold, read_models

Db = AsyncDatabase[dict[str, Any]]


async def _store_with(db: Db, events: int) -> tuple[EventStore, BankLoad]:
    store = EventStore(db)
    await store.init()
    load = BankLoad(store)
    await load.append(events)
    return store, load


def _runners(
    store: EventStore, options: RunnerOptions, reports: list[BatchReport]
) -> list[ProjectionRunner]:
    def on_batch(report: BatchReport) -> None:
        reports.append(report)

    opts = replace(options, on_batch=on_batch)
    source = SharedSource(store, fetch_size=opts.batch_size, capacity=opts.catch_up_size)
    return [ProjectionRunner(store, p, opts, source=source) for p in bank_projections()]


async def _catch_up(runners: list[ProjectionRunner]) -> None:
    for runner in runners:
        await runner.init()
    for runner in runners:
        await runner.catch_up()


async def test_a_backlog_within_the_budget_is_one_batch_and_each_document_one_write(
    db: Db,
) -> None:
    store, _ = await _store_with(db, 600)
    head = await store.head_sequence()
    reports: list[BatchReport] = []
    runners = _runners(store, RunnerOptions(batch_size=50), reports)
    await _catch_up(runners)
    # Before: a first batch of 50 (the head unknown), then batches of 10 x 50 = 500.
    assert [(r.projection, r.position) for r in reports] == [
        (p.name, head) for p in bank_projections()
    ]
    accounts = next(r for r in reports if r.projection == "accounts_read")
    assert accounts.operations == await db["accounts_read"].count_documents({})
    assert_same(fold(await all_events(store)), await read_models(db))


async def test_the_byte_budget_cuts_catch_up_batches_and_nothing_is_lost(db: Db) -> None:
    store, _ = await _store_with(db, 300)
    head = await store.head_sequence()
    reports: list[BatchReport] = []
    # ~300-400 bytes an event: a budget of 8 KiB holds a few dozen of them.
    runners = _runners(store, RunnerOptions(batch_size=10, catch_up_max_bytes=8192), reports)
    await _catch_up(runners)
    mine = [r for r in reports if r.projection == "transactions_read"]
    spans = [b.position - a.position for a, b in itertools.pairwise(mine)]
    assert len(mine) > 3 and max(spans) < 100
    assert mine[-1].position == head
    assert_same(fold(await all_events(store)), await read_models(db))


async def test_a_transaction_refused_as_too_large_halves_the_catch_up_batch(db: Db) -> None:
    store, _ = await _store_with(db, 400)
    head = await store.head_sequence()
    refused: list[int] = []

    def hook(point: str) -> None:
        # The server's answer to a transaction past its cache budget (MongoDB 6.2+).
        if point == "writes" and not refused:
            refused.append(1)
            raise OperationFailure(
                "transaction too large",
                code=313,
                details={"codeName": "TransactionTooLargeForCache"},
            )

    reports: list[BatchReport] = []
    options = RunnerOptions(batch_size=20, step_hook=hook)
    runners = _runners(store, options, reports)
    first = runners[0]
    await first.init()
    await first.catch_up()
    assert refused == [1]
    assert first.catch_up_size == head // 2
    positions = [r.position for r in reports]
    assert positions[0] <= head // 2 + 1 and positions[-1] == head
    assert first.events_applied == sum(len(r.events) for r in reports)
    await _catch_up(runners[1:])
    assert_same(fold(await all_events(store)), await read_models(db))


async def test_live_batches_stay_small(db: Db) -> None:
    store, load = await _store_with(db, 200)
    reports: list[BatchReport] = []
    runners = _runners(store, RunnerOptions(batch_size=30), reports)
    await _catch_up(runners)
    reports.clear()
    before = await store.head_sequence()
    await load.append(25)  # less than a live batch behind
    for runner in runners:
        await runner.catch_up()
    assert reports and all(len(r.events) <= 30 for r in reports)
    assert all(r.position - before <= 30 for r in reports)
    assert_same(fold(await all_events(store)), await read_models(db))


async def test_a_window_served_from_the_shared_cache_says_a_newer_notified_event_is_waiting(
    db: Db,
) -> None:
    """Two appends notified one after the other: a runner reads and caches the window up
    to the first; a second runner, woken by the second's notification (its wake cleared as
    it started its step), is served that cached window. Its head must be the newer one, so
    that it reads again at once: else it waits for the next append or the idle poll (1 s;
    a live run once showed a 1.04 s lag)."""
    store, load = await _store_with(db, 3)
    first = await store.head_sequence()
    notified = [first]
    source = SharedSource(store, fetch_size=50, known_head=lambda: notified[-1])
    types = sorted({t for p in bank_projections() for t in p.event_types})
    source.register(types)
    seen = await source.read(0, 50, types)  # one runner, woken by the first append
    assert (seen.complete, seen.head) == (first, first)
    await load.append(1)
    notified.append(await store.head_sequence())  # the next append's notification
    served = await source.read(0, 50, types)  # the other runner: the cache holds (0, first]
    assert served.complete == first
    assert served.head == notified[-1] > served.complete, "a notified event looks caught up"
    newer = await source.read(served.complete, 50, types)
    assert newer.complete == notified[-1] and len(newer.events) >= 1
