"""Console page render times with 100,000 events stored, next to a raw PyMongo read.

    python benchmarks/bench_console.py [--quick] [--events N]

Fills the bank's store (accounts with many credits, one 10,000-event account and one of
10 events), starts `esmongo serve` on it as its own process, waits until the projections
have caught up, logs in, then fetches each page over HTTP. The baseline, in this process
on the same server: one raw PyMongo `find` of 50 events of a stream by version range (what
the cheapest page needs from the database). Target: every page under 200 ms (issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import httpx
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))  # console_serve

from common import Stopwatch, Timing, benchmark_server, console, print_table
from console_serve import serve
from esmongo.api import ApiKeys, Role
from esmongo.bank import Account, Bank
from esmongo.codec import CODEC_OPTIONS, Document

LONG, SHORT = "long", "short"
CHUNK = 500
TARGET_MS = 200.0
T = TypeVar("T")


async def fill_account(bank: Bank, account_id: str, credits: int) -> int:
    account = Account(account_id)
    account.create("owner", "Owner", "EUR")
    account.activate()
    done = 2
    for i in range(credits):
        account.credit(Decimal("1.00"), f"{account_id}-{i}")
        done += 1
        if len(account.uncommitted_events) >= CHUNK:
            await bank.accounts.save(account)
    if account.uncommitted_events:
        await bank.accounts.save(account)
    return done


async def fill(bank: Bank, events: int) -> int:
    total = await fill_account(bank, LONG, 10_000 - 2)
    total += await fill_account(bank, SHORT, 8)
    per_account = 100
    accounts = max(0, (events - total) // per_account)
    queue = list(range(accounts))

    async def worker() -> int:
        made = 0
        while queue:
            n = queue.pop()
            made += await fill_account(bank, f"acc{n:05d}", per_account - 2)
        return made

    total += sum(await asyncio.gather(*[worker() for _ in range(8)]))
    return total


def wait_caught_up(http: httpx.Client, key: str) -> float:
    started = time.monotonic()
    while True:
        statuses = http.get("/projections", headers={"Authorization": f"Bearer {key}"}).json()
        if all(s["lagEvents"] == 0 for s in statuses):
            return time.monotonic() - started
        if time.monotonic() - started > 1800:
            raise SystemExit(f"projections still lagging: {statuses}")
        time.sleep(1)


def login(http: httpx.Client, key: str) -> None:
    form = http.get("/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    r = http.post("/login", data={"key": key, "token": token.group(1), "next": "/"})
    assert r.status_code == 303, r.text


def time_page(http: httpx.Client, label: str, path: str, rounds: int) -> Timing:
    assert http.get(path).status_code == 200, path  # warm
    watch = Stopwatch()
    for _ in range(rounds):
        with watch.lap():
            r = http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return watch.timing(label, rounds)


async def baseline(db: AsyncDatabase[Document], rounds: int) -> Timing:
    events = db["events"]
    watch = Stopwatch()
    for i in range(rounds):
        start = 1 + (i * 50) % 9_900
        query = {
            "aggregateType": "account",
            "aggregateId": LONG,
            "aggregateVersion": {"$gte": start, "$lte": start + 49},
        }
        with watch.lap():
            found = await events.find(query).sort("aggregateVersion", 1).to_list()
        assert len(found) == 50
    return watch.timing("raw PyMongo: 50 events of a stream by version", rounds)


async def on_db(uri: str, name: str, work: Callable[[AsyncDatabase[Document]], Awaitable[T]]) -> T:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        return await work(client.get_database(name, codec_options=CODEC_OPTIONS))
    finally:
        await client.close()


async def prepare(db: AsyncDatabase[Document], events: int) -> tuple[str, int, float]:
    bank = await Bank(db).init()
    started = time.monotonic()
    stored = await fill(bank, events)
    filled_s = time.monotonic() - started
    keys = ApiKeys(db)
    await keys.init()
    key = await keys.create(Role.ADMIN, "bench", "Bench")
    await bank.close()
    return key, stored, filled_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    rounds = 5 if args.quick else 20
    name = "bench_console"
    with benchmark_server() as uri:
        client: MongoClient[Document] = MongoClient(uri)
        client.drop_database(name)
        try:
            run(uri, name, args.events, rounds)
        finally:
            client.drop_database(name)
            client.close()


def run(uri: str, name: str, events: int, rounds: int) -> None:
    """Fill, serve, measure; the database is dropped by the caller."""
    key, stored, filled_s = asyncio.run(on_db(uri, name, lambda db: prepare(db, events)))
    console.print(f"stored {stored} events in {filled_s:.0f}s")
    with tempfile.TemporaryDirectory(prefix="esmongo-bench-console-") as home:
        env = {**os.environ, "MONGODB_URI": uri, "ESMONGO_DB": name, "ESMONGO_HOME": home}
        with (
            serve(env, Path(home) / "serve.log", ready_within_s=120) as (url, _),
            httpx.Client(base_url=url, timeout=60) as http,
        ):
            caught_up_s = wait_caught_up(http, key)
            console.print(f"projections caught up in {caught_up_s:.0f}s")
            auth = {"Authorization": f"Bearer {key}"}
            transfer = http.post(
                "/transfers",
                json={"fromAccountId": LONG, "toAccountId": SHORT, "amount": "1"},
                headers=auth,
            ).json()
            debit = transfer["eventIds"][0]
            login(http, key)
            pages = [
                ("overview", "/"),
                ("live tail (first render)", "/ui/tail"),
                ("streams search", "/ui/streams?type=account&q=acc0"),
                ("stream of 10 events", f"/ui/streams/account/{SHORT}"),
                ("stream of 10,000 events, first page", f"/ui/streams/account/{LONG}"),
                (
                    "stream of 10,000 events, last page",
                    f"/ui/streams/account/{LONG}?from=9952",
                ),
                ("event", f"/ui/events/{debit}"),
                ("causation trace (transfer)", f"/ui/trace/{debit}"),
                ("time travel, 100-event account", "/ui/accounts/acc00001/time?version=50"),
                ("time travel, 10,000-event account, latest", f"/ui/accounts/{LONG}/time"),
                (
                    "time travel, 10,000-event account, v5000",
                    f"/ui/accounts/{LONG}/time?version=5000",
                ),
                ("projections", "/ui/projections"),
                ("dead letters", "/ui/dead-letters"),
                ("schemas", "/ui/schemas"),
            ]
            timings = [time_page(http, label, path, rounds) for label, path in pages]
    base = asyncio.run(on_db(uri, name, lambda db: baseline(db, rounds * 5)))
    rows = []
    for t in [base, *timings]:
        verdict = "" if t is base else ("ok" if t.p50_ms < TARGET_MS else "OVER")
        rows.append(
            [
                t.label,
                f"{t.p50_ms:.1f}",
                f"{t.p99_ms:.1f}",
                f"{t.p50_ms / base.p50_ms:.1f}x",
                verdict,
            ]
        )
    print_table(
        f"console pages over HTTP, {stored} events stored ({rounds} rounds each)",
        ["page", "p50 ms", "p99 ms", "p50 / baseline", f"< {TARGET_MS:.0f} ms"],
        rows,
    )


if __name__ == "__main__":
    main()
