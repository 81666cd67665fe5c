"""The bank's query side: accounts from their read model, owners from their streams.

The API asks these questions and never names a collection: how the read model is stored
is the bank's business (esmongo.bank.read_models).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.bank.account import Account
from esmongo.bank.read_models import ACCOUNTS_READ, AccountsReadModel
from esmongo.codec import Document
from esmongo.projections import Checkpoints
from esmongo.store import EventStore


@dataclass(frozen=True)
class AccountPage:
    """One page of accounts, by account id; `next_after` continues it (None: the last)."""

    items: list[Document]
    next_after: str | None


class ReadModelLagging(TimeoutError):
    """The accounts read model did not reach the store's head in time."""

    def __init__(self, projection: str, sequence: int, timeout_s: float) -> None:
        super().__init__(
            f"projection {projection} did not reach sequence {sequence} within "
            f"{timeout_s:.0f}s; retry later"
        )
        self.projection, self.sequence, self.timeout_s = projection, sequence, timeout_s


class AccountQueries:
    """Questions about accounts, answered from `accounts_read` or the account's events."""

    def __init__(self, store: EventStore, db: AsyncDatabase[Document]) -> None:
        self.store = store
        self.accounts = db[ACCOUNTS_READ]
        self.checkpoints = Checkpoints(db)

    async def owner(self, account_id: str) -> str | None:
        """The owner id from the account's first event; None when there is no such account.

        From the stream, not the read model: an account just created has an owner before
        it is projected, and access checks must not depend on the projection's lag.
        """
        async for event in self.store.read_stream(Account.aggregate_type, account_id, 1, 1):
            return str(event.data["ownerId"])
        return None

    async def wait_until_current(self, timeout_s: float) -> None:
        """Return once the read model holds every event committed so far (read-your-writes);
        ReadModelLagging after `timeout_s`. Inline (esmongo.projections.inline), it holds
        them as soon as they commit: one read of the counter, no wait."""
        if (await self.store.inline.state(AccountsReadModel.name)).inline:
            return
        head = await self.store.head_sequence()
        try:
            await self.checkpoints.wait_until(AccountsReadModel.name, head, timeout_s)
        except TimeoutError:
            raise ReadModelLagging(AccountsReadModel.name, head, timeout_s) from None

    async def account(self, account_id: str) -> Document | None:
        """The account's read model document; None until it is projected."""
        return await self.accounts.find_one({"accountId": account_id})

    async def accounts_page(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        min_balance: Decimal | None = None,
        max_balance: Decimal | None = None,
        after: str | None = None,
        id_prefix: str = "",
        limit: int = 50,
    ) -> AccountPage:
        """Accounts by owner, status and balance range (inclusive), after an account id,
        whose id starts with `id_prefix`."""
        query: dict[str, Any] = {}
        if owner is not None:
            query["owner.userId"] = owner
        if status is not None:
            query["status"] = status
        balance: dict[str, Any] = {}
        if min_balance is not None:
            balance["$gte"] = min_balance
        if max_balance is not None:
            balance["$lte"] = max_balance
        if balance:
            query["balance"] = balance
        ids: dict[str, Any] = {}
        if after is not None:
            ids["$gt"] = after
        if id_prefix:
            ids["$gte" if after is None or after < id_prefix else "$gt"] = max(
                id_prefix, after or ""
            )
            ids["$lt"] = id_prefix + "\U0010ffff"
        if ids:
            query["accountId"] = ids
        cursor = self.accounts.find(query, sort=[("accountId", 1)], limit=limit + 1)
        docs = [doc async for doc in cursor]
        more = len(docs) > limit
        docs = docs[:limit]
        return AccountPage(docs, docs[-1]["accountId"] if more else None)
