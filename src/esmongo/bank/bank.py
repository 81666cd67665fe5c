"""Everything the bank needs, wired once: store, schema catalog, snapshots, repository, handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo import (
    EventStore,
    Repository,
    SchemaCatalog,
    SchemaRegistry,
    SnapshotStore,
    active_events_collection,
)
from esmongo.bank.account import Account
from esmongo.bank.commands import AccountCommandHandler, Command, CommandResult
from esmongo.bank.schemas import ACCOUNT_SCHEMAS


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
        self, command: Command, metadata: Mapping[str, Any] | None = None
    ) -> CommandResult:
        return await self.handler.handle(command, metadata)
