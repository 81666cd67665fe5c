"""The queries `transactions_read` is kept for, each served by its own index (explain):
an account's statement, newest first, by `account_statement`; a transaction by its id, on
every account it touched (a transfer's two legs share one id), by `transaction_id`. No one
compound index serves both, so neither is folded into the other (issue 14, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore
from esmongo.bank import TransactionsReadModel
from esmongo.projections import ProjectionRunner

Db = AsyncDatabase[dict[str, Any]]


def plan_indexes(plan: Any) -> Iterator[tuple[str, str | None]]:
    """(stage, index name) of every stage of a plan."""
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan["stage"], plan.get("indexName")
        for value in plan.values():
            yield from plan_indexes(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from plan_indexes(item)


async def winning(db: Db, query: dict[str, Any], sort: dict[str, int] | None = None) -> set[Any]:
    command: dict[str, Any] = {"find": "transactions_read", "filter": query}
    if sort:
        command["sort"] = sort
    explained = await db.command("explain", command)
    return set(plan_indexes(explained["queryPlanner"]["winningPlan"]))


async def test_each_transactions_read_query_uses_its_index(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    await ProjectionRunner(store, TransactionsReadModel()).init()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await db["transactions_read"].insert_many(
        {
            "_id": f"e{n}",
            "accountId": f"acc{n % 7}",
            "transactionId": f"t{n // 2}",
            "timestamp": start + timedelta(minutes=n),
        }
        for n in range(200)
    )
    statement = await winning(db, {"accountId": "acc3"}, {"timestamp": -1})
    assert ("IXSCAN", "account_statement") in statement, statement
    # (The embedded server sorts the index's output again, where MongoDB would not:
    # docs/mongodb.md. Either way, no collection scan.)
    assert not any(stage == "COLLSCAN" for stage, _ in statement), statement
    lookup = await winning(db, {"transactionId": "t40"})
    assert ("IXSCAN", "transaction_id") in lookup, lookup
    assert not any(stage == "COLLSCAN" for stage, _ in lookup), lookup
