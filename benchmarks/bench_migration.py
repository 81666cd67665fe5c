"""A stored migration and time travel on a realistic store (ADR 0004).

    python benchmarks/bench_migration.py [--accounts 200] [--per-account 50]

Seeds accounts whose credits are stored at v1.0 (amount as a string), then: dry run; copy
into a new collection, interrupted at 40% and resumed; an uninterrupted copy for
comparison; verify; switch. Then temporal queries on the migrated store: state_at by time
and by version, aggregates_at over every account, and a balance history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import benchmark_db, console
from esmongo import AppendRequest, EventStore, NewEvent
from esmongo.bank import Account, balance_history
from esmongo.model import TemporalQueries
from esmongo.ops.migration import Migration, Migrator, active_events_collection
from esmongo.store.event_store import EVENT_INDEXES
from esmongo.store.transactions import DURABLE

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def credited_v2(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """v1.0 kept money as strings and had no currency."""
    return {
        **data,
        "amount": Decimal(data["amount"]),
        "balanceAfter": Decimal(data["balanceAfter"]),
        "currency": data.get("currency", "USD"),
    }


class Interrupted(Exception):
    pass


async def seed(store: EventStore, accounts: int, per_account: int) -> None:
    balances = [Decimal("0.00")] * accounts
    for r in range(per_account):
        requests = []
        for a in range(accounts):
            at = T0 + timedelta(minutes=r, seconds=a)
            if r == 0:
                data = {"ownerId": f"u{a}", "ownerName": "N", "currency": "USD"}
                event = NewEvent("account.created", data, timestamp=at)
            elif r == 1:
                event = NewEvent("account.activated", {}, timestamp=at)
            else:
                amount = Decimal(f"{(a * 7 + r) % 90 + 1}.25")
                balances[a] += amount
                legacy = {
                    "amount": str(amount),
                    "transactionId": f"t{r}",
                    "balanceAfter": str(balances[a]),
                }
                event = NewEvent("account.credited", legacy, event_version="1.0", timestamp=at)
            requests.append(AppendRequest("account", f"acc-{a:04d}", [event]))
        await store.append_streams(requests)


async def main(accounts: int, per_account: int) -> None:
    async with benchmark_db("bench_migration") as db:
        store = EventStore(db)
        await store.init()
        started = time.perf_counter()
        await seed(store, accounts, per_account)
        total = await store.head_sequence()
        console.print(f"seeded {total:,} events in {time.perf_counter() - started:.1f}s")

        steps = [Migration("credited-v2", "account.credited", "1.0", "2.0", credited_v2)]
        migrator = Migrator(db, steps, batch_size=1000)
        started = time.perf_counter()
        dry = await migrator.dry_run(samples=1)
        changes = ", ".join(
            f"{c.event_type} v{c.from_version}->v{c.to_version}: {c.count:,}" for c in dry.changes
        )
        console.print(
            f"dry run: {dry.total:,} events, would change {dry.would_change:,} ({changes}), "
            f"{dry.failure_count} failures, {time.perf_counter() - started:.2f}s"
        )

        def stop(done: int, _total: int) -> None:
            if done >= total * 4 // 10:
                raise Interrupted

        with contextlib.suppress(Interrupted):
            await migrator.run("events_v2", progress=stop)
        run = await migrator.run("events_v2")
        console.print(
            f"copy: interrupted, resumed after #{run.resumed_after:,}: {run.copied:,} more in "
            f"{run.elapsed_s:.2f}s = {run.rate:,.0f} docs/s, complete={run.complete}"
        )
        whole = await Migrator(db, steps, batch_size=1000).run("events_v2_whole")
        console.print(
            f"copy (uninterrupted): {whole.copied:,} docs in {whole.elapsed_s:.2f}s "
            f"= {whole.rate:,.0f} docs/s, {whole.transformed:,} transformed"
        )
        raw = db.get_collection("raw_copy", write_concern=DURABLE)
        await raw.create_indexes(EVENT_INDEXES)
        docs = [d async for d in db["events"].find({}, sort=[("sequence", 1)])]
        started = time.perf_counter()
        for i in range(0, len(docs), 1000):
            await raw.insert_many(docs[i : i + 1000], ordered=True)
        raw_rate = len(docs) / (time.perf_counter() - started)
        console.print(
            f"raw insert_many(1000) of the same documents, same indexes: "
            f"{raw_rate:,.0f} docs/s (copy/raw = {whole.rate / raw_rate:.2f}x)"
        )
        report = await migrator.verify("events_v2")
        console.print(
            f"verify: ok={report.ok} {report.source_count:,}/{report.target_count:,} events, "
            f"{report.transformed:,} transformed, {report.problem_count} problems, "
            f"{report.elapsed_s:.2f}s = {report.source_count / report.elapsed_s:,.0f} pairs/s"
        )
        started = time.perf_counter()
        await migrator.switch("events_v2", tail_only=True)
        console.print(
            f"switch (seal, catch-up, tail verify, record): {time.perf_counter() - started:.2f}s, "
            f"active: {await active_events_collection(db)}"
        )

        live = EventStore(db, collection=await active_events_collection(db))
        queries = TemporalQueries(live, Account)
        at = T0 + timedelta(minutes=per_account // 2, seconds=30)
        started = time.perf_counter()
        state = await queries.state_at("acc-0042", at=at)
        assert state is not None
        console.print(
            f"state_at(at): version {state.version}, balance {state.balance} "
            f"in {(time.perf_counter() - started) * 1000:.1f} ms"
        )
        started = time.perf_counter()
        state = await queries.state_at("acc-0042", version=per_account * 3 // 5)
        assert state is not None
        console.print(
            f"state_at(version={state.version}): balance {state.balance} "
            f"in {(time.perf_counter() - started) * 1000:.1f} ms"
        )
        started = time.perf_counter()
        found = [a async for a in queries.aggregates_at(at)]
        elapsed = time.perf_counter() - started
        replayed = sum(a.version for a in found)
        console.print(
            f"aggregates_at: {len(found)} accounts ({replayed:,} events replayed) in "
            f"{elapsed:.2f}s = {replayed / elapsed:,.0f} events/s, one cursor"
        )
        started = time.perf_counter()
        history = await balance_history(
            live, "acc-0042", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
        )
        console.print(
            f"balance_history (10 min): opening {history.opening_balance}, "
            f"{len(history.points)} points, closing {history.closing_balance} "
            f"in {(time.perf_counter() - started) * 1000:.1f} ms"
        )
        legacy = {"eventType": "account.credited", "eventVersion": "1.0"}
        kept = await db["events"].count_documents(legacy)
        console.print(f"the sealed original still holds its {kept:,} credited v1.0 events")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--per-account", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.accounts, args.per_account))
