"""Everything the bank needs, wired once: store, schema catalog, snapshots, repository, handler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, Repository, SchemaRegistry, SnapshotStore
from esmongo.bank.account import Account, AccountError, AccountStatus
from esmongo.bank.commands import AccountCommandHandler, Command, CommandResult
from esmongo.bank.schemas import ACCOUNT_SCHEMAS
from esmongo.ops.migration import active_events_collection
from esmongo.schema import SchemaCatalog
from esmongo.store import ArchiveReport
from esmongo.store.unit_of_work import Writes


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


class Bank:
    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], *, snapshot_every: int = 50, strict: bool = True
    ) -> None:
        self.db = db
        self.registry = SchemaRegistry(strict=strict)
        self.catalog = SchemaCatalog(db, self.registry)
        self.snapshots = SnapshotStore(db)
        self.snapshot_every = snapshot_every
        self._open_store("events")

    def _open_store(self, collection: str) -> None:
        self.store = EventStore(self.db, registry=self.registry, collection=collection)
        self.accounts = Repository(
            self.store, Account, snapshots=self.snapshots, snapshot_every=self.snapshot_every
        )
        self.handler = AccountCommandHandler(self.accounts)

    async def init(self) -> Bank:
        """The active events collection (a migration may have switched it), indexes,
        counter and the account event schemas. Idempotent."""
        active = await active_events_collection(self.db)
        if active != self.store.collection_name:
            self._open_store(active)
        await self.store.init()
        await self.snapshots.init()
        await self.catalog.init()
        await self.catalog.register_all(ACCOUNT_SCHEMAS)
        await self.catalog.load()
        return self

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
