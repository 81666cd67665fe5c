"""The idempotency record in the append's transaction vs a claim before and a complete after.

    python benchmarks/bench_idempotency.py [--quick]

Each command is a credit through `Bank.handle`, with an idempotency key:
- `unit of work`: the response record is one more insert in the append's transaction
  (`writes=`), as the API does now (issue 10 item 5);
- `claim + complete`: insert a claim, run the command, update the claim with the response
  (the API before), three round trips of their own.
Both run N commands sequentially and N commands from W concurrent writers (distinct accounts,
so group commit can batch them), alternating rounds, same process, same server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import Stopwatch, Timing, benchmark_db, console, print_table
from esmongo import RecordedEvent
from esmongo.api.idempotency import IdempotencyKeys, StoredResponse
from esmongo.bank import ActivateAccount, Bank, CommandResult, CreateAccount, CreditAccount
from esmongo.events import utc_now
from esmongo.store.unit_of_work import DocumentWrite

Run = Callable[[Bank, IdempotencyKeys, str, str], Awaitable[None]]


def response(result: CommandResult) -> StoredResponse:
    return StoredResponse(200, {"version": result.version, "eventIds": result.event_ids})


async def unit_of_work(bank: Bank, keys: IdempotencyKeys, account: str, key: str) -> None:
    def writes(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
        events = [e for stream in recorded for e in stream]
        return [keys.record(key, "f", response(CommandResult.recorded(account, events)))]

    result = await bank.handle(CreditAccount(account, "1.00", key), writes=writes)
    assert result.success, result.error


async def claim_and_complete(bank: Bank, keys: IdempotencyKeys, account: str, key: str) -> None:
    now = utc_now()
    await keys.collection.insert_one(
        {"_id": key, "fingerprint": "f", "status": None, "body": None, "createdAt": now}
    )
    result = await bank.handle(CreditAccount(account, "1.00", key))
    assert result.success, result.error
    done = response(result)
    await keys.collection.update_one(
        {"_id": key}, {"$set": {"status": done.status, "body": json.dumps(done.body)}}
    )


async def sequential(bank: Bank, keys: IdempotencyKeys, run: Run, label: str, n: int) -> Timing:
    watch = Stopwatch()
    for _ in range(n):
        with watch.lap():
            await run(bank, keys, "acc_0", uuid.uuid4().hex)
    return watch.timing(label, n)


async def concurrent(
    bank: Bank, keys: IdempotencyKeys, run: Run, label: str, n: int, writers: int
) -> Timing:
    watch = Stopwatch()

    async def writer(w: int) -> None:
        for _ in range(n // writers):
            with watch.lap():
                await run(bank, keys, f"acc_{w}", uuid.uuid4().hex)

    await asyncio.gather(*[writer(w) for w in range(writers)])
    return watch.timing(label, n // writers * writers)


async def main(quick: bool) -> None:
    n, writers, rounds = (100, 8, 2) if quick else (400, 16, 3)
    async with benchmark_db("esmongo_bench_idempotency") as db:
        bank = await Bank(db).init()
        keys = IdempotencyKeys(db)
        await keys.init()
        for w in range(writers):
            await bank.handle(CreateAccount(f"acc_{w}", "bench", "Bench", "EUR"))
            await bank.handle(ActivateAccount(f"acc_{w}"))
        results: dict[str, list[Timing]] = {}
        runs: list[tuple[str, Run]] = [
            ("unit of work", unit_of_work),
            ("claim + complete", claim_and_complete),
        ]
        for r in range(rounds):
            order = runs if r % 2 == 0 else list(reversed(runs))
            for name, run in order:
                seq = await sequential(bank, keys, run, name, n)
                con = await concurrent(bank, keys, run, name, n, writers)
                results.setdefault(f"{name}|seq", []).append(seq)
                results.setdefault(f"{name}|con", []).append(con)
        rows: list[list[str]] = []
        best: dict[str, float] = {}
        for key, timings in results.items():
            name, mode = key.split("|")
            rate = max(t.rate for t in timings)
            best[key] = rate
            p50 = min(t.p50_ms for t in timings)
            label = "sequential" if mode == "seq" else f"{writers} writers"
            rows.append([name, label, f"{rate:,.0f}", f"{p50:.1f}"])
        print_table(
            f"credits with an Idempotency-Key (best of {rounds} alternating rounds, N={n})",
            ["record", "mode", "commands/s", "p50 ms"],
            rows,
        )
        for mode, label in (("seq", "sequential"), ("con", f"{writers} writers")):
            ratio = best[f"unit of work|{mode}"] / best[f"claim + complete|{mode}"]
            console.print(f"{label}: unit of work / claim + complete = {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args: Any = parser.parse_args()
    asyncio.run(main(args.quick))
