"""`esmongo demo`: open, credit, debit and freeze accounts; print what the database holds."""

from __future__ import annotations

import secrets
from decimal import Decimal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from esmongo.bank.bank import Bank
from esmongo.bank.commands import (
    ActivateAccount,
    Command,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    FreezeAccount,
    TransferFunds,
)


def _script(run: str) -> list[Command]:
    alice, bob, carol = f"acc_{run}_alice", f"acc_{run}_bob", f"acc_{run}_carol"
    return [
        CreateAccount(alice, "user_alice", "Alice Martin", "EUR"),
        CreateAccount(bob, "user_bob", "Bob Durand", "EUR"),
        CreateAccount(carol, "user_carol", "Carol Petit", "USD"),
        ActivateAccount(alice),
        ActivateAccount(bob),
        ActivateAccount(carol),
        CreditAccount(alice, Decimal("2500.00"), f"txn_{run}_1", "salary_deposit"),
        CreditAccount(bob, Decimal("300.00"), f"txn_{run}_2", "cash_deposit"),
        DebitAccount(alice, Decimal("42.10"), f"txn_{run}_3", "groceries"),
        TransferFunds(alice, bob, Decimal("150.00"), f"trf_{run}_1", "rent share"),
        CreditAccount(carol, Decimal("99.99"), f"txn_{run}_4", "refund"),
        FreezeAccount(bob, "suspicious activity reported"),
        # Refused: a frozen account takes no debit.
        DebitAccount(bob, Decimal("10.00"), f"txn_{run}_5", "atm"),
        # Sent twice, as a client retrying after a timeout would: money moves once.
        CreditAccount(alice, Decimal("10.00"), f"txn_{run}_6", "cashback"),
        CreditAccount(alice, Decimal("10.00"), f"txn_{run}_6", "cashback"),
    ]


async def run_demo(bank: Bank, console: Console) -> int:
    """Runs the script; returns how many commands were refused."""
    run = secrets.token_hex(3)
    refused = 0
    metadata = {"userId": "demo", "userName": "esmongo demo", "source": "cli"}
    console.rule("[bold]Commands")
    for command in _script(run):
        result = await bank.handle(command, metadata | {"correlationId": f"corr_{run}"})
        name = type(command).__name__
        if result.success:
            note = f"v{result.version}, {len(result.events)} event(s)"
            if result.already_applied:
                note = "already applied: nothing recorded again"
            console.print(f"[green]ok[/]       {name:<16} {result.aggregate_id:<22} {note}")
        else:
            refused += 1
            code = getattr(result.error, "code", type(result.error).__name__)
            console.print(
                f"[red]refused[/]  {name:<16} {result.aggregate_id:<22} "
                + escape(f"[{code}] {result.error}")
            )

    console.rule("[bold]Balances (read back from the database)")
    table = Table("account", "owner", "status", "balance", "version")
    ids = [f"acc_{run}_{n}" for n in ("alice", "bob", "carol")]
    for account_id in ids:
        account = await bank.accounts.load(account_id)
        table.add_row(
            account.id,
            account.owner_name or "",
            str(account.status),
            f"{account.balance} {account.currency}",
            str(account.version),
        )
    console.print(table)

    console.rule(f"[bold]Event history of {ids[0]}")
    history = Table("seq", "v", "type", "data", "at")
    async for event in bank.store.read_stream("account", ids[0]):
        data = ", ".join(f"{k}={v}" for k, v in event.data.items() if v is not None)
        history.add_row(
            str(event.sequence),
            str(event.aggregate_version),
            event.event_type,
            data,
            event.timestamp.strftime("%H:%M:%S.%f")[:-3],
        )
    console.print(history)
    console.print(f"head sequence: {await bank.store.head_sequence()}, refused commands: {refused}")
    return refused
