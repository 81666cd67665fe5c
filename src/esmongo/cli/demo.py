"""`esmongo demo`: realistic traffic through the HTTP API, then what the database holds.

The service runs in this process on a loopback port (with its projection daemon), on the
configured database; the demo talks to it over real HTTP like any client would.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from esmongo.api import ApiKeys, Role, create_app
from esmongo.api.app import run_projection_daemon
from esmongo.api.server import serve_in_thread
from esmongo.bank import Bank
from esmongo.connect.connection import Connection, Settings

CUSTOMERS = ["Alice Martin", "Bob Durand", "Chloé Petit", "David Moreau", "Emma Laurent"]


class DemoClient:
    """The API as the demo uses it: one teller key, one admin key."""

    def __init__(self, http: httpx.AsyncClient, teller: str, admin: str) -> None:
        self.http, self.teller, self.admin = http, teller, admin
        self.outcomes: Counter[str] = Counter()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.teller}"}
        response = await self.http.post(path, json=body or {}, headers=headers)
        code = "ok" if response.is_success else response.json()["error"]["code"]
        self.outcomes[code] += 1
        return response

    async def get(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin}"}
        response = await self.http.get(path, params=params, headers=headers)
        response.raise_for_status()
        return response.json()


async def traffic(api: DemoClient, run: str, operations: int, console: Console) -> list[str]:
    """Open accounts, then credits, debits and transfers at random; one freeze."""
    rng = random.Random(run)
    accounts = [f"acc_{run}_{i}" for i in range(len(CUSTOMERS))]
    for number, (account, name) in enumerate(zip(accounts, CUSTOMERS, strict=True), start=1):
        opening = [
            (
                "/accounts",
                {
                    "accountId": account,
                    "ownerId": f"cust_{number}",
                    "ownerName": name,
                    "currency": "EUR",
                },
            ),
            (f"/accounts/{account}/activate", {}),
            (f"/accounts/{account}/credit", {"amount": "500.00", "reason": "opening"}),
        ]
        for path, body in opening:
            response = await api.post(path, body)
            if not response.is_success:
                raise RuntimeError(f"demo setup failed: POST {path}: {response.text}")
    frozen = accounts[-1]
    columns = (TextColumn("traffic"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("traffic", total=operations)
        for step in range(operations):
            if step == operations // 3:
                await api.post(f"/accounts/{frozen}/freeze", {"reason": "card reported stolen"})
            account = rng.choice(accounts)
            amount = f"{rng.randint(1, 20000) / 100:.2f}"
            roll = rng.random()
            if roll < 0.4:
                await api.post(f"/accounts/{account}/credit", {"amount": amount})
            elif roll < 0.75:
                await api.post(f"/accounts/{account}/debit", {"amount": amount})
            else:
                target = rng.choice([a for a in accounts if a != account])
                body = {"fromAccountId": account, "toAccountId": target, "amount": amount}
                await api.post("/transfers", body)
            progress.advance(task)
    refused = await api.post(f"/accounts/{frozen}/debit", {"amount": "10.00", "reason": "atm"})
    reason = refused.json()["error"]
    console.print(
        f"debit on frozen {frozen}: HTTP {refused.status_code} "
        + escape(f"[{reason['code']}] {reason['message']}")
    )
    return accounts


async def report(api: DemoClient, bank: Bank, accounts: list[str], console: Console) -> bool:
    """Balances from the read model next to a replay of the events; one history; lag."""
    await api.get(f"/accounts/{accounts[0]}", consistent="true")
    table = Table("account", "owner", "status", "balance (read model)", "replayed", "txns")
    same = True
    for account in accounts:
        view = await api.get(f"/accounts/{account}")
        replayed = (await bank.accounts.load(account)).balance
        same = same and Decimal(view["balance"]) == replayed
        table.add_row(
            account,
            view["owner"]["name"],
            view["status"],
            f"{view['balance']} {view['currency']}",
            str(replayed),
            str(view["stats"]["transactionCount"]),
        )
    console.print(table)
    console.print(f"read model equals the replay of the events: {'yes' if same else 'NO'}")

    history = await api.get(f"/accounts/{accounts[0]}/history", limit=8)
    events = Table("v", "seq", "type", "amount", "balance after", "at", title=f"{accounts[0]}")
    for e in history["events"]:
        data = e["data"]
        events.add_row(
            str(e["aggregateVersion"]),
            str(e["sequence"]),
            e["eventType"],
            data.get("amount", ""),
            data.get("balanceAfter", ""),
            e["timestamp"][11:23],
        )
    console.print(events)
    lag = Table("projection", "checkpoint", "lag (events)", "dead letters")
    for status in await api.get("/projections"):
        lag.add_row(
            status["name"],
            str(status["position"]),
            str(status["lagEvents"]),
            str(status["deadLetters"]),
        )
    console.print(lag)
    return same


async def run_demo(console: Console, operations: int = 200) -> Counter[str]:
    settings = Settings.from_env()
    async with Connection(settings) as conn:
        bank = await Bank(conn.db).init()
        keys = ApiKeys(conn.db)
        await keys.init()
        teller = await keys.create(Role.TELLER, "demo-teller", "Demo teller")
        admin = await keys.create(Role.ADMIN, "demo-admin", "Demo admin")
        app = create_app(
            settings=Settings(mongodb_uri=conn.uri, database=settings.database),
            background=run_projection_daemon,
        )
        with serve_in_thread(app) as base_url:
            console.print(f"service on {base_url} (database {settings.database})")
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
                api = DemoClient(http, teller, admin)
                run = secrets.token_hex(3)
                accounts = await traffic(api, run, operations, console)
                same = await report(api, bank, accounts, console)
        outcomes = ", ".join(f"{code}: {n}" for code, n in api.outcomes.most_common())
        console.print(f"requests: {outcomes}")
        if not same:
            api.outcomes["read_model_mismatch"] += 1
        return api.outcomes
