"""An event-sourced application as the generic tools see it, and how they find it.

The `esmongo` command line (events, projections, dead letters, schemas, migrations, backup,
check, snapshots) and the service need the same few things of any application: its store,
its schemas and upcasters, its aggregate classes and its projections. `Application` wires
them once on a database; an application built on esmongo makes one (or subclasses it, as
`esmongo.bank.Bank` does) and names its factory in `ESMONGO_APP=module:factory`, where the
factory takes the database and returns the `Application`. docs/operations.md shows how.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Collection, Sequence
from typing import Any, Self, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import ConfigurationError
from esmongo.model.aggregate import Aggregate
from esmongo.model.cache import MAX_AGGREGATES, MAX_BYTES, AggregateCache
from esmongo.model.repository import Repository
from esmongo.model.snapshots import SnapshotStore
from esmongo.ops.audit import AUDIT_SCHEMAS
from esmongo.ops.migration import active_events_collection
from esmongo.projections import Projection
from esmongo.projections.inline import configure_inline, register_inline
from esmongo.schema.catalog import SchemaCatalog
from esmongo.schema.registry import EventSchema, SchemaRegistry, Upcasters
from esmongo.store import EventStore
from esmongo.store.collections import DEFAULT_EVENTS
from esmongo.store.layout import log_database

__all__ = [
    "APP_ENV",
    "DEFAULT_APP",
    "Application",
    "ApplicationFactory",
    "application_of",
    "load_factory",
]

APP_ENV = "ESMONGO_APP"
DEFAULT_APP = "esmongo.bank:Bank"
"""The reference application, when `ESMONGO_APP` is not set."""

A = TypeVar("A", bound=Aggregate)
ApplicationFactory = Callable[[AsyncDatabase[Document]], "Application"]


class Application:
    """A store, its schemas and upcasters, a repository per aggregate class, projections.

    `init()` follows a migration's switch to another events collection, creates the indexes
    and registers `schemas` in the catalog; every generic command runs it first (but a
    restore, which must find the database empty). `close()` waits for the snapshots that
    saves write in the background.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        aggregates: Sequence[type[Aggregate]] = (),
        schemas: Sequence[EventSchema] = (),
        projections: Sequence[Projection] = (),
        upcasters: Upcasters | None = None,
        snapshot_every: int = 50,
        strict: bool = True,
        cache_aggregates: int = MAX_AGGREGATES,
        cache_bytes: int = MAX_BYTES,
        inline: str | Collection[str] | None = None,
    ) -> None:
        """`inline`: projections to run inline (esmongo.projections.inline), by name; None
        reads $ESMONGO_INLINE_PROJECTIONS (comma-separated)."""
        self.db = db
        self.registry = SchemaRegistry(strict=strict)
        self.catalog = SchemaCatalog(db, self.registry)
        self.snapshots = SnapshotStore(db)
        self.upcasters = upcasters if upcasters is not None else Upcasters()
        self.schemas = [*schemas, *AUDIT_SCHEMAS]
        self.projections = list(projections)
        configure_inline(self.projections, inline)
        self.aggregates = list(aggregates)
        self.snapshot_every = snapshot_every
        self.cache_aggregates = cache_aggregates
        """Aggregates each repository keeps (0: none); `cache_bytes`: their estimated size."""
        self.cache_bytes = cache_bytes
        self.repositories: dict[str, Repository[Any]] = {}
        self.log_db = db
        """The database that holds the log: `db` until `init()` reads another in
        esmongo_meta (esmongo.store.layout)."""
        self._open_store(DEFAULT_EVENTS)

    def _open_store(self, collection: str) -> None:
        """The store on `collection`, and repositories over it (subclasses add theirs)."""
        self.store = EventStore(
            self.db,
            registry=self.registry,
            upcasters=self.upcasters,
            collection=collection,
            log_db=self.log_db,
        )
        self.repositories = {
            kind.aggregate_type: Repository(
                self.store,
                kind,
                snapshots=self.snapshots,
                snapshot_every=self.snapshot_every,
                cache=AggregateCache(self.cache_aggregates, self.cache_bytes)
                if self.cache_aggregates
                else None,
            )
            for kind in self.aggregates
        }
        register_inline(self.store, self.projections)

    def repository(self, kind: type[A]) -> Repository[A]:
        """The repository of an aggregate class this application declared."""
        found = self.repositories.get(kind.aggregate_type)
        if found is None or found.aggregate_class is not kind:
            raise KeyError(f"{kind.__name__} is not an aggregate of this application")
        return found

    def projection(self, name: str) -> Projection:
        """The projection called `name`; KeyError naming the known ones otherwise."""
        for projection in self.projections:
            if projection.name == name:
                return projection
        known = ", ".join(p.name for p in self.projections) or "none"
        raise KeyError(f"no projection {name!r} (known: {known})")

    async def init(self) -> Self:
        """The log database, the active events collection, indexes, counter, and the
        schemas. Idempotent."""
        active = await active_events_collection(self.db)
        log_db = await log_database(self.db)
        if active != self.store.collection_name or log_db.name != self.log_db.name:
            self.log_db = log_db
            self._open_store(active)
        await self.store.init()
        await self.snapshots.init()
        await self.catalog.init()
        await self.catalog.register_all(self.schemas)
        await self.catalog.load()
        return self

    async def close(self) -> None:
        """Wait for the background snapshots, so none is cut off by the process's exit;
        then withdraw the writer registration (esmongo.store.writers), so that no one
        takes this process for dead after it left. A later append registers again."""
        for repository in self.repositories.values():
            await repository.drain()
        await self.store.writers.close()


def load_factory(spec: str | None = None) -> ApplicationFactory:
    """The factory `module:NAME` names (`spec`, else `$ESMONGO_APP`, else the bank's).

    ConfigurationError when it cannot be imported or is not callable.
    """
    spec = spec or os.environ.get(APP_ENV) or DEFAULT_APP
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{APP_ENV} must be module:factory, not {spec!r}")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{APP_ENV}={spec}: cannot load it ({exc})") from exc
    if not callable(found):
        raise ConfigurationError(f"{APP_ENV}={spec} is not callable")
    return found  # type: ignore[no-any-return]


def application_of(factory: ApplicationFactory, db: AsyncDatabase[Document]) -> Application:
    """What the factory makes of `db`; ConfigurationError unless it is an Application."""
    app = factory(db)
    if not isinstance(app, Application):
        raise ConfigurationError(
            f"{APP_ENV}: the factory returned {type(app).__name__}, not an esmongo Application"
        )
    return app
