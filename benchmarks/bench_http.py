"""The HTTP service under 16 concurrent clients, next to the library in the same run.

    python benchmarks/bench_http.py [--quick]

`esmongo serve` runs as its own process on the benchmark's server; 16 clients credit and
debit their own accounts over HTTP. The same commands run directly through the library
(`Bank.handle`, 16 tasks) and as bare `EventStore.append` calls, on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    Stopwatch,
    Timing,
    benchmark_server,
    console,
    database,
    print_table,
)
from esmongo import NO_STREAM, NewEvent
from esmongo.api import ApiKeys, Role
from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount, DebitAccount
from esmongo.connect.embedded import free_port

CLIENTS = 16


async def library_commands(bank: Bank, per_client: int) -> Timing:
    for c in range(CLIENTS):
        await bank.handle(CreateAccount(f"lib{c}", "u", "Bench", "EUR"))
        await bank.handle(ActivateAccount(f"lib{c}"))
    watch = Stopwatch()

    async def client(c: int) -> None:
        for i in range(per_client):
            make = CreditAccount if i % 2 == 0 else DebitAccount
            with watch.lap():
                result = await bank.handle(make(f"lib{c}", Decimal("1.00"), f"l{c}-{i}"))
            assert result.success, result.error

    await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    return watch.timing(f"library Bank.handle, {CLIENTS} tasks", CLIENTS * per_client)


async def library_appends(bank: Bank, per_client: int) -> Timing:
    watch = Stopwatch()
    data = {"ownerId": "u", "ownerName": "Bench", "currency": "EUR"}

    async def client(c: int) -> None:
        for i in range(per_client):
            with watch.lap():
                await bank.store.append(
                    "account", f"raw{c}-{i}", [NewEvent("account.created", data)], NO_STREAM
                )

    await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    return watch.timing(f"library EventStore.append(1), {CLIENTS} tasks", CLIENTS * per_client)


async def http_commands(base: str, key: str, per_client: int) -> Timing:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as http:
        for c in range(CLIENTS):
            r = await http.post("/accounts", json={"accountId": f"http{c}", "currency": "EUR"})
            assert r.status_code == 201, r.text
            assert (await http.post(f"/accounts/http{c}/activate")).status_code == 200
        watch = Stopwatch()

        async def client(c: int) -> None:
            for i in range(per_client):
                kind = "credit" if i % 2 == 0 else "debit"
                with watch.lap():
                    r = await http.post(f"/accounts/http{c}/{kind}", json={"amount": "1.00"})
                assert r.status_code == 200, r.text

        await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    return watch.timing(f"HTTP POST credit/debit, {CLIENTS} clients", CLIENTS * per_client)


def start_service(uri: str, db_name: str, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"MONGODB_URI": uri, "ESMONGO_DB": db_name}
    command = [sys.executable, "-m", "esmongo.cli", "serve", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("esmongo serve did not start")


async def main(quick: bool) -> None:
    per_client = 15 if quick else 60
    with benchmark_server() as uri:
        async with database(uri, "bench_http") as db:
            bank = await Bank(db).init()
            keys = ApiKeys(db)
            await keys.init()
            key = await keys.create(Role.TELLER, "bench")
            port = free_port()
            service = start_service(uri, "bench_http", port)
            try:
                base = f"http://127.0.0.1:{port}"
                await wait_ready(base)
                http = await http_commands(base, key, per_client)
            finally:
                service.terminate()
                service.wait(timeout=30)
            direct = await library_commands(bank, per_client)
            appends = await library_appends(bank, per_client)

    rows = [
        (
            t.label,
            f"{t.rate:,.0f}",
            f"{t.p50_ms:.1f}",
            f"{t.p99_ms:.1f}",
            f"{t.rate / appends.rate:.2f}x",
        )
        for t in (appends, direct, http)
    ]
    print_table(
        "Commands per second (1 event each) and latency per request",
        ["path", "ops/s", "p50 ms", "p99 ms", "vs append"],
        rows,
    )
    console.print(
        f"HTTP is {http.rate / direct.rate:.2f}x the library's command rate "
        f"and {http.rate / appends.rate:.2f}x its bare append rate"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    asyncio.run(main(parser.parse_args().quick))
