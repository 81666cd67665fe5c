"""A bank service process for tests of what several processes do to the same accounts.

Usage: python tests/bank_worker.py URI DATABASE. Reads one command a line from stdin and
answers one JSON line on stdout:
- `credit ACCOUNT AMOUNT`, `debit ACCOUNT AMOUNT`, `open ACCOUNT`: run through
  `Bank.handle` (its repository keeps an aggregate cache), answers
  {"ok", "error", "balance", "conflicts"};
- `hold`: the next command stops after deciding, before its save, and answers
  {"held": true} then; `go` lets it save, and its answer follows;
- `balance ACCOUNT`: the balance as this process's repository loads it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from typing import Any

from pymongo import AsyncMongoClient

from esmongo.bank import (
    ActivateAccount,
    Bank,
    CreateAccount,
    CreditAccount,
    DebitAccount,
)
from esmongo.codec import CODEC_OPTIONS
from esmongo.metrics import COMMAND_CONFLICTS_RETRIED


def say(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, default=str), flush=True)


def conflicts() -> float:
    return sum(
        sample.value
        for metric in COMMAND_CONFLICTS_RETRIED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def main(uri: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    bank = await Bank(client.get_database(name, codec_options=CODEC_OPTIONS)).init()
    lines = asyncio.Queue[str]()
    loop = asyncio.get_running_loop()

    async def read_lines() -> None:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await lines.put(line.strip())
        await lines.put("")

    reader = asyncio.create_task(read_lines())
    save = bank.accounts.save_all
    holding = False

    async def held_save(*args: Any, **kwargs: Any) -> Any:
        nonlocal holding
        if holding:
            holding = False
            say({"held": True})
            assert await lines.get() == "go"
        return await save(*args, **kwargs)

    bank.accounts.save_all = held_save  # type: ignore[method-assign]
    while line := await lines.get():
        verb, *args = line.split()
        if verb == "hold":
            holding = True
            continue
        if verb == "balance":
            say({"balance": (await bank.accounts.load(args[0])).balance})
            continue
        if verb == "open":
            commands: list[Any] = [
                CreateAccount(args[0], "u", "User", "EUR"),
                ActivateAccount(args[0]),
            ]
        elif verb == "credit":
            commands = [CreditAccount(args[0], Decimal(args[1]))]
        else:
            commands = [DebitAccount(args[0], Decimal(args[1]))]
        for command in commands:
            result = await bank.handle(command)
        balance = (await bank.accounts.load(args[0])).balance
        say(
            {
                "ok": result.success,
                "error": type(result.error).__name__ if result.error else None,
                "balance": balance,
                "conflicts": conflicts(),
            }
        )
    reader.cancel()
    await bank.close()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
