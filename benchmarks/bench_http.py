"""The HTTP service under 16 concurrent clients, next to the library in the same run.

    python benchmarks/bench_http.py [--quick] [--rounds N] [--profile FILE] [--daemon-only]
                                    [--inline] [--client aiohttp|httpx]

`esmongo serve` runs as its own process on the benchmark's server; 16 clients credit and
debit their own accounts over HTTP, with keep-alive connections from one aiohttp session
(`--client httpx`: from httpx, which spends about six times aiohttp's CPU a request; on a
machine whose cores the clients share with the service and the database server, that CPU is
taken from them). The same commands run directly through the library (`Bank.handle`, 16
tasks) and as bare `EventStore.append` calls, on the same server. Each row gives the CPU
milliseconds a command cost each process (this one, the service, the embedded server; Linux
only), which says where a rate's limit is. The service runs twice: with its projection
daemon (the default), then with `--no-projections` (the daemon is then meant to run in a
process of its own; here none runs), which shows what the daemon's read-model writes cost
the commands on this single-threaded server.

`--inline`: instead, `accounts_read` async (the default) against inline
(ESMONGO_INLINE_PROJECTIONS=accounts_read), each with the projection daemon running beside the
commands (in the service; in the benchmark's process for `Bank.handle`): the command rates,
and the latency of a `consistent=true` read of the account right after each command.

`--profile FILE`: py-spy (`pip install py-spy`, not a project dependency) samples the
service process while the HTTP clients run; FILE gets the collapsed stacks, and the
functions most often on the stack (own time and total) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).parent))

from common import (
    Stopwatch,
    Timing,
    benchmark_server,
    database,
    print_table,
    server_pid,
    stop_process,
)
from esmongo import NO_STREAM, NewEvent
from esmongo.api import ApiKeys, Role
from esmongo.bank import ActivateAccount, Bank, CreateAccount, CreditAccount, DebitAccount
from esmongo.connect.embedded import free_port
from esmongo.projections import ProjectionDaemon

CLIENTS = 16


async def library_commands(
    bank: Bank,
    per_client: int,
    tag: str = "lib",
    label: str = f"library Bank.handle, {CLIENTS} tasks",
    server: int | None = None,
) -> Timing:
    for c in range(CLIENTS):
        await bank.handle(CreateAccount(f"{tag}{c}", "u", "Bench", "EUR"))
        await bank.handle(ActivateAccount(f"{tag}{c}"))
    watch = Stopwatch({"client": os.getpid(), "server": server})
    stats = Batches(bank)

    async def client(c: int) -> None:
        for i in range(per_client):
            make = CreditAccount if i % 2 == 0 else DebitAccount
            with watch.lap():
                result = await bank.handle(make(f"{tag}{c}", Decimal("1.00"), f"l{c}-{i}"))
            assert result.success, result.error

    await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    return stats.into(watch.timing(label, CLIENTS * per_client))


async def library_appends(
    bank: Bank, per_client: int, server: int | None = None, tag: str = "raw"
) -> Timing:
    watch = Stopwatch({"client": os.getpid(), "server": server})
    stats = Batches(bank)
    data = {"ownerId": "u", "ownerName": "Bench", "currency": "EUR"}

    async def client(c: int) -> None:
        for i in range(per_client):
            with watch.lap():
                await bank.store.append(
                    "account", f"{tag}{c}-{i}", [NewEvent("account.created", data)], NO_STREAM
                )

    await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    timing = watch.timing(f"library EventStore.append(1), {CLIENTS} tasks", CLIENTS * per_client)
    return stats.into(timing)


class Batches:
    """The group-commit batch size over a run, from the store's own counts."""

    def __init__(self, bank: Bank) -> None:
        self.stats = bank.store.stats
        self.appends, self.transactions = self.stats.appends, self.stats.transactions

    def into(self, timing: Timing) -> Timing:
        transactions = self.stats.transactions - self.transactions
        if transactions:
            timing.batch = (self.stats.appends - self.appends) / transactions
        return timing


async def store_counts(request: Request) -> tuple[float, float]:
    """(appends, transactions) the service's store has committed, from its /metrics."""
    status, text = await request("GET", "/metrics")
    assert status == 200, text
    found = dict.fromkeys(("esmongo_store_appends_total", "esmongo_store_transactions_total"), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found["esmongo_store_appends_total"], found["esmongo_store_transactions_total"]


Request = Callable[..., Awaitable[tuple[int, str]]]
"""request(method, path, json=None, params=None) -> (status, body)"""


@contextlib.asynccontextmanager
async def http_client(base: str, key: str, kind: str = "aiohttp") -> AsyncIterator[Request]:
    """Keep-alive connections for CLIENTS concurrent clients, from aiohttp or httpx."""
    headers = {"Authorization": f"Bearer {key}"}
    if kind == "httpx":
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as hx:

            async def request(method: str, path: str, **kwargs: Any) -> tuple[int, str]:
                r = await hx.request(method, path, **kwargs)
                return r.status_code, r.text

            yield request
        return
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def request(method: str, path: str, **kwargs: Any) -> tuple[int, str]:
            async with session.request(method, path, **kwargs) as r:
                return r.status, await r.text()

        yield request


async def http_commands(
    base: str,
    key: str,
    per_client: int,
    tag: str = "",
    label: str = "service with projections",
    *,
    processes: dict[str, int | None] | None = None,
    client: str = "aiohttp",
) -> Timing:
    async with http_client(base, key, client) as request:
        for c in range(CLIENTS):
            body = {"accountId": f"http{tag}{c}", "currency": "EUR"}
            status, text = await request("POST", "/accounts", json=body)
            assert status == 201, text
            status, text = await request("POST", f"/accounts/http{tag}{c}/activate")
            assert status == 200, text
        appends, transactions = await store_counts(request)
        watch = Stopwatch({"client": os.getpid(), **(processes or {})})

        async def one(c: int) -> None:
            for i in range(per_client):
                kind = "credit" if i % 2 == 0 else "debit"
                path = f"/accounts/http{tag}{c}/{kind}"
                with watch.lap():
                    status, text = await request("POST", path, json={"amount": "1.00"})
                assert status == 200, text

        await asyncio.gather(*[one(c) for c in range(CLIENTS)])
        label = f"HTTP credit/debit, {CLIENTS} clients, {label}"
        timing = watch.timing(label, CLIENTS * per_client)
        appended, committed = await store_counts(request)
    if committed > transactions:
        timing.batch = (appended - appends) / (committed - transactions)
    return timing


def start_service(
    uri: str, db_name: str, port: int, projections: bool, inline: str = ""
) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "MONGODB_URI": uri,
        "ESMONGO_DB": db_name,
        "ESMONGO_INLINE_PROJECTIONS": inline,
    }
    command = [sys.executable, "-m", "esmongo.cli", "serve", "--port", str(port)]
    if not projections:
        command.append("--no-projections")
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


def start_profiler(pid: int, out: str) -> subprocess.Popen[bytes]:
    command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "-o", out]
    return subprocess.Popen([*command, "--nonblocking", "--rate", "200"])


def print_profile(path: str, top: int = 15) -> None:
    """Own and total samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        n = int(count)
        samples += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    for title, counts in (("own", own), ("total", total)):
        rows = [
            (frame[:90], f"{n / samples:.1%}")
            for frame, n in counts.most_common(top + (0 if title == "own" else 25))
            if title == "own" or "esmongo" in frame or "pymongo" in frame
        ][:top]
        print_table(f"service profile: {title} samples ({samples})", ["function", "share"], rows)


async def library_consistent(bank: Bank, per_client: int, tag: str) -> tuple[Timing, Timing]:
    """Each task: a credit, then the account read with `consistent=true`'s wait."""
    for c in range(CLIENTS):
        await bank.handle(CreateAccount(f"{tag}{c}", "u", "Bench", "EUR"))
        await bank.handle(ActivateAccount(f"{tag}{c}"))
    commands, reads = Stopwatch(), Stopwatch()

    async def client(c: int) -> None:
        for i in range(per_client):
            with commands.lap():
                result = await bank.handle(CreditAccount(f"{tag}{c}", Decimal("1.00"), f"{i}"))
                assert result.success, result.error
                with reads.lap():
                    await bank.queries.wait_until_current(30)
                    doc = await bank.queries.account(f"{tag}{c}")
            assert doc is not None and doc["stats"]["transactionCount"] == i + 1, doc

    await asyncio.gather(*[client(c) for c in range(CLIENTS)])
    n = CLIENTS * per_client
    return (
        commands.timing(f"Bank.handle + consistent read, {CLIENTS} tasks", n),
        reads.timing("its consistent read alone", n),
    )


async def http_consistent(
    base: str, key: str, per_client: int, tag: str, client: str = "aiohttp"
) -> Timing:
    """Each client: a credit, then GET the account with consistent=true (timed alone)."""
    reads = Stopwatch()
    async with http_client(base, key, client) as request:

        async def one(c: int) -> None:
            for _ in range(per_client):
                path = f"/accounts/http{tag}{c}"
                status, text = await request("POST", f"{path}/credit", json={"amount": "1.00"})
                assert status == 200, text
                with reads.lap():
                    status, text = await request("GET", path, params={"consistent": "true"})
                assert status == 200, text

        await asyncio.gather(*[one(c) for c in range(CLIENTS)])
    return reads.timing("HTTP GET consistent=true after a credit", CLIENTS * per_client)


async def until_inline(bank: Bank, inline: bool) -> None:
    deadline = time.monotonic() + 120
    while (await bank.store.inline.state("accounts_read")).inline != inline:
        if time.monotonic() > deadline:
            raise RuntimeError("accounts_read was not handed over in time")
        await asyncio.sleep(0.05)


async def inline_vs_async(quick: bool, rounds: int, client: str) -> None:
    """accounts_read async, then inline (`rounds` times): commands and consistent reads,
    in one run on one server."""
    per_client = 15 if quick else 60
    rows: list[tuple[str, str, str, str, str]] = []
    with benchmark_server() as uri:
        async with database(uri, "bench_http") as db:
            plain = await Bank(db, inline="").init()
            keys = ApiKeys(db)
            await keys.init()
            key = await keys.create(Role.TELLER, "bench")
            appends = await library_appends(plain, per_client)
            rows.append(_row(appends, appends))
            for mode in ("async", "inline") * rounds:
                wanted = "accounts_read" if mode == "inline" else ""
                bank = await Bank(db, inline=wanted).init()
                daemon = ProjectionDaemon(bank.store, bank.projections)
                daemon.start()
                try:
                    await until_inline(bank, mode == "inline")
                    tag = f"{mode}{len(rows)}-"
                    direct = await library_commands(
                        bank,
                        per_client,
                        f"lib{tag}",
                        f"library Bank.handle, {CLIENTS} tasks, with the daemon",
                    )
                    consistent, read = await library_consistent(bank, per_client, f"cr{tag}")
                    await daemon.wait_until(await bank.store.head_sequence(), timeout_s=120)
                finally:
                    await daemon.stop()
                port = free_port()
                service = start_service(uri, "bench_http", port, True, wanted)
                try:
                    base = f"http://127.0.0.1:{port}"
                    await wait_ready(base)
                    await until_inline(bank, mode == "inline")
                    label = "service with projections"
                    http = await http_commands(base, key, per_client, tag, label, client=client)
                    http_read = await http_consistent(base, key, per_client, tag, client)
                finally:
                    await stop_process(service)
                for timing in (direct, consistent, read, http, http_read):
                    rows.append(_row(timing, appends, mode))
    print_table(
        "accounts_read async vs inline: commands (1 event each) and consistent reads",
        ["path", "ops/s", "p50 ms", "p99 ms", "vs append"],
        rows,
    )


def _row(t: Timing, appends: Timing, mode: str = "") -> tuple[str, str, str, str, str]:
    label = f"{mode}: {t.label}" if mode else t.label
    if t.label.startswith(("HTTP GET", "its consistent")):  # a latency, not a rate
        return (label, "", f"{t.p50_ms:.1f}", f"{t.p99_ms:.1f}", "")
    rate = f"{t.rate / appends.rate:.2f}x"
    return (label, f"{t.rate:,.0f}", f"{t.p50_ms:.1f}", f"{t.p99_ms:.1f}", rate)


CPU_COLUMNS = ("client", "service", "server")


def _cpu_cells(t: Timing) -> tuple[str, ...]:
    cpu = tuple(f"{t.cpu_ms[name]:.2f}" if name in t.cpu_ms else "" for name in CPU_COLUMNS)
    return (*cpu, f"{t.batch:.1f}" if t.batch is not None else "")


async def main(quick: bool, profile: str | None, with_bare: bool, client: str, rounds: int) -> None:
    """After a warm-up, each round: bare appends, Bank.handle, then HTTP with the service's
    projection daemon and (unless `with_bare` is off) without it, on one server."""
    per_client = 15 if quick else 60
    rows: list[tuple[str, ...]] = []
    with benchmark_server() as uri:
        server = server_pid(uri)
        async with database(uri, "bench_http") as db:
            bank = await Bank(db).init()
            keys = ApiKeys(db)
            await keys.init()
            key = await keys.create(Role.TELLER, "bench")
            await library_appends(bank, 10, tag="warm-")  # connections, caches, indexes
            for n in range(rounds):
                appends = await library_appends(bank, per_client, server, f"raw{n}-")
                direct = await library_commands(bank, per_client, f"lib{n}-", server=server)
                timings = [appends, direct]
                for projections in (True, False) if with_bare else (True,):
                    port = free_port()
                    service = start_service(uri, "bench_http", port, projections)
                    try:
                        base = f"http://127.0.0.1:{port}"
                        await wait_ready(base)
                        spy = None
                        if profile and projections and n == 0:
                            spy = start_profiler(service.pid, profile)
                        tag = f"{n}-" if projections else f"bare{n}-"
                        label = (
                            "service with projections"
                            if projections
                            else "service without its projection daemon"
                        )
                        processes = {"service": service.pid, "server": server}
                        timings.append(
                            await http_commands(
                                base,
                                key,
                                per_client,
                                tag,
                                label,
                                processes=processes,
                                client=client,
                            )
                        )
                        if spy is not None:
                            spy.send_signal(signal.SIGINT)
                            spy.wait(timeout=60)
                    finally:
                        await stop_process(service)
                for t in timings:
                    rate = f"{t.rate / appends.rate:.2f}x"
                    cells = (f"{t.rate:,.0f}", f"{t.p50_ms:.1f}", f"{t.p99_ms:.1f}", rate)
                    rows.append((f"{n + 1}", t.label, *cells, *_cpu_cells(t)))
    print_table(
        f"Commands per second (1 event each), latency per request, and CPU ms a command "
        f"by process (HTTP load from {client})",
        ["round", "path", "ops/s", "p50 ms", "p99 ms", "vs append", *CPU_COLUMNS, "batch"],
        rows,
    )
    if profile:
        print_profile(profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the service into FILE")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="accounts_read async vs inline: command rates and consistent-read latency",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="the whole sequence N times (--inline: async then inline)",
    )
    parser.add_argument(
        "--daemon-only",
        action="store_true",
        help="only the service with its projection daemon (code without --no-projections)",
    )
    parser.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="the HTTP clients' library (default aiohttp: the lighter on CPU)",
    )
    args = parser.parse_args()
    if args.inline:
        asyncio.run(inline_vs_async(args.quick, args.rounds, args.client))
    else:
        asyncio.run(main(args.quick, args.profile, not args.daemon_only, args.client, args.rounds))
