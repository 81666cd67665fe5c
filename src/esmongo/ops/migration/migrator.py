"""`Migrator`: one object for the four steps of a stored migration (plan, copy, verify,
switch), each of which lives in its own module."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops.migration.active import active_events_collection
from esmongo.ops.migration.copy import RunReport, copy_events
from esmongo.ops.migration.plan import (
    MAX_LISTED,
    Change,
    DryRunReport,
    Migration,
    MigrationPlan,
    Progress,
    count_changes,
    dry_run,
)
from esmongo.ops.migration.switch import switch_to
from esmongo.ops.migration.verify import VerifyReport, verify_target
from esmongo.schema.registry import SchemaRegistry
from esmongo.store.layout import log_database


class Migrator:
    """Copy-transform the events collection into a new one, verify, switch.

    `source` defaults to the active events collection. With a `registry`, every
    transformed event is validated against the schema of its new version (a violation is
    a failure). `batch_size` documents are inserted per `insert_many`. Reports hold the
    first `max_listed` failures and count them all; a run also keeps every failure in
    `esmongo_migration_failures` (`{target, sequence, event_id, ..., error}`).
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        migrations: Sequence[Migration],
        *,
        source: str | None = None,
        registry: SchemaRegistry | None = None,
        batch_size: int = 1000,
        max_listed: int = MAX_LISTED,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.db = db
        self.migration_plan = MigrationPlan(migrations, registry)
        self.batch_size = batch_size
        self.max_listed = max_listed
        self._source = source

    @property
    def ids(self) -> list[str]:
        return self.migration_plan.ids

    async def source_name(self) -> str:
        if self._source is None:
            self._source = await active_events_collection(self.db)
        return self._source

    async def plan(self) -> list[Change]:
        """What would change, counted by one `$group` (no transform runs)."""
        log = await log_database(self.db)
        return await count_changes(self.migration_plan, log[await self.source_name()])

    async def dry_run(self, samples: int = 3, progress: Progress | None = None) -> DryRunReport:
        """Every transform run on the events it targets, nothing written (plan.dry_run)."""
        return await dry_run(
            self.migration_plan,
            (await log_database(self.db))[await self.source_name()],
            samples=samples,
            batch_size=self.batch_size,
            max_listed=self.max_listed,
            progress=progress,
        )

    async def run(self, target: str, progress: Progress | None = None) -> RunReport:
        """Copy into `target` what it lacks (copy.copy_events). Resumable: call again after
        an interruption; a failure stops the writing but not the scan."""
        return await copy_events(
            self.db,
            self.migration_plan,
            await self.source_name(),
            target,
            batch_size=self.batch_size,
            max_listed=self.max_listed,
            progress=progress,
        )

    async def verify(
        self,
        target: str,
        progress: Progress | None = None,
        *,
        after_sequence: int = 0,
        through: int | None = None,
    ) -> VerifyReport:
        """Compare the source and `target` (verify.verify_copy): `ok` or what differs. By
        default up to the target's highest sequence, so it passes while appends go on."""
        return await verify_target(
            self.db,
            await self.source_name(),
            target,
            self.migration_plan.planned,
            batch_size=self.batch_size,
            progress=progress,
            after_sequence=after_sequence,
            through=through,
        )

    async def switch(
        self, target: str, *, catch_up: bool = True, tail_only: bool = False
    ) -> VerifyReport:
        """Make `target` the active events collection, keeping the source for audit.

        Closes the write fence on the source first (esmongo.store.fence: every append in flight
        commits before it, none after), copies what was appended since the last run
        (`catch_up`), verifies up to the head, and only then makes the target active and
        opens the fence on it, in one transaction. On any failure the fence reopens on the
        source and nothing is switched (MigrationError). Processes still writing to the
        source are refused (EventsCollectionSealed): restart them so they open the new
        collection.

        Writes pause while the fence is closed, for as long as the verification takes.
        With `tail_only`, after a full `verify()` that passed, only what was copied since
        is compared (plus the counts of the verified prefix): a short pause on a large
        store, trusting that nothing but this migrator wrote to the target in between.
        """
        return await switch_to(
            self.db,
            self.migration_plan,
            await self.source_name(),
            target,
            batch_size=self.batch_size,
            max_listed=self.max_listed,
            catch_up=catch_up,
            tail_only=tail_only,
        )
