"""The bank application: the generic application wiring, plus commands, queries, archiving."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.application import Application
from esmongo.bank.account import Account, AccountError, AccountStatus
from esmongo.bank.commands import AccountCommandHandler, Command, CommandResult
from esmongo.bank.queries import AccountQueries
from esmongo.bank.read_models import bank_projections
from esmongo.bank.schemas import ACCOUNT_SCHEMAS
from esmongo.model.cache import MAX_AGGREGATES
from esmongo.store import ArchiveReport, Writes


class AccountNotClosed(AccountError):
    """Only a closed account can be archived."""

    code = "account_not_closed"


@dataclass
class ArchiveSummary:
    """What `Bank.archive_closed` did."""

    archived: list[ArchiveReport] = field(default_factory=list)
    already: int = 0
    """Accounts archived before: nothing done."""
    refused: list[str] = field(default_factory=list)
    """Accounts that were not closed (never, for accounts found by their closing event)."""


class Bank(Application):
    """The accounts application: the generic tools see its store, schemas, the Account
    repository and the read models (esmongo.application); the API and the bank's own
    commands add the command handler, the queries and archiving."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        snapshot_every: int = 50,
        strict: bool = True,
        cache_aggregates: int = MAX_AGGREGATES,
        inline: str | Collection[str] | None = None,
    ) -> None:
        """`inline`: read models to update in the commands' transactions (e.g.
        "accounts_read"); None reads $ESMONGO_INLINE_PROJECTIONS."""
        super().__init__(
            db,
            aggregates=[Account],
            schemas=ACCOUNT_SCHEMAS,
            projections=bank_projections(),
            snapshot_every=snapshot_every,
            strict=strict,
            cache_aggregates=cache_aggregates,
            inline=inline,
        )

    def _open_store(self, collection: str) -> None:
        super()._open_store(collection)
        self.accounts = self.repository(Account)
        self.handler = AccountCommandHandler(self.accounts)
        self.queries = AccountQueries(self.store, self.db)

    async def handle(
        self,
        command: Command,
        metadata: Mapping[str, Any] | None = None,
        *,
        writes: Writes | None = None,
    ) -> CommandResult:
        """Run a command; `writes` commit with its events or not at all (see
        AccountCommandHandler.handle)."""
        return await self.handler.handle(command, metadata, writes=writes)

    async def archive_account(self, account_id: str) -> ArchiveReport:
        """Move a closed account's stream to the archive (esmongo.EventStore.archive_stream).

        Its state is snapshotted first, so the kept (permanent) snapshot loads it without a
        replay. Idempotent. AccountNotClosed unless the account is closed;
        AggregateNotFoundError when there is no such account.
        """
        earlier = await self.store.archived(Account.aggregate_type, account_id)
        if earlier is not None:
            return earlier
        account = await self.accounts.load(account_id)
        if account.status != AccountStatus.CLOSED:
            raise AccountNotClosed(
                f"account {account_id} is {account.status}; only a closed account can be archived"
            )
        await self.snapshots.save(
            Account.aggregate_type,
            account_id,
            account.version,
            account.snapshot_state(),
            Account.schema_version,
        )
        return await self.store.archive_stream(
            Account.aggregate_type, account_id, expected_version=account.version
        )

    async def archive_closed(
        self, closed_before: datetime, progress: Callable[[int, int], None] | None = None
    ) -> ArchiveSummary:
        """Archive every account closed before `closed_before` (found by its
        `account.closed` event); `progress(done, total)` after each account."""
        ids = []
        async for event in self.store.read_by_type("account.closed", end=closed_before):
            if event.aggregate_type == Account.aggregate_type:
                ids.append(event.aggregate_id)
        summary = ArchiveSummary()
        unique = list(dict.fromkeys(ids))
        for done, account_id in enumerate(unique, start=1):
            try:
                report = await self.archive_account(account_id)
            except AccountNotClosed:
                summary.refused.append(account_id)
            else:
                if report.already:
                    summary.already += 1
                else:
                    summary.archived.append(report)
            if progress is not None:
                progress(done, len(unique))
        return summary
