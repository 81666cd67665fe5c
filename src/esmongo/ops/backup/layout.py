"""What a backup holds: which collections, in which database, and its report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.ops.backup.files import (
    BackupError,
)
from esmongo.schema.catalog import COLLECTION as SCHEMAS
from esmongo.store.collections import (
    ACTIVE,
    ARCHIVE,
    ARCHIVED_STREAMS,
    CHAIN_LINKS,
    COUNTERS,
    DATA_KEYS,
    DEFAULT_EVENTS,
    ERASURES,
    META,
    MIGRATIONS,
    WRITERS,
)

Progress = Callable[[str, int], None]

STORE_OWNED = (
    SCHEMAS,
    ARCHIVED_STREAMS,
    ARCHIVE,
    CHAIN_LINKS,
    META,
    MIGRATIONS,
    DATA_KEYS,
    ERASURES,
)
"""Beside the log: what esmongo keeps that cannot be derived from events."""


@dataclass(frozen=True)
class Layout:
    """Which collections a backup holds: the active log, sealed originals if any, and the
    application's collections that cannot be derived from events (`kept`)."""

    events: str = DEFAULT_EVENTS
    sealed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def logs(self) -> tuple[str, str]:
        """The collections of events: in the cut, the checksum and the continuity check."""
        return (self.events, ARCHIVE)

    @property
    def in_log(self) -> frozenset[str]:
        """The collections that live in the log database (esmongo.store.layout)."""
        return frozenset({*self.logs, ARCHIVED_STREAMS, CHAIN_LINKS, *self.sealed})

    @property
    def collections(self) -> tuple[str, ...]:
        """Caches and derived data are rebuilt from events; only what cannot be derived
        is kept. In this order: the archive's registry is read after the log (see the
        module docstring); the data keys after the events, so that every event of the cut
        finds its key (a key is made before the event it encrypts)."""
        owned = (ARCHIVED_STREAMS, ARCHIVE, CHAIN_LINKS, META, MIGRATIONS, DATA_KEYS, ERASURES)
        return (self.events, SCHEMAS, *self.kept, *owned, *self.sealed)

    def keeping(self, names: Sequence[str]) -> Layout:
        """The same layout, with these application collections too."""
        kept = tuple(dict.fromkeys([*self.kept, *names]))
        owned = {self.events, *STORE_OWNED, *self.sealed, COUNTERS, WRITERS}
        if clash := [name for name in kept if name in owned]:
            raise BackupError(f"{', '.join(clash)}: esmongo's own, not an application's")
        return Layout(self.events, self.sealed, kept)

    @classmethod
    async def of(cls, db: AsyncDatabase[Document]) -> Layout:
        meta = await db[META].find_one({"_id": ACTIVE}) or {}
        active = str(meta.get("name", DEFAULT_EVENTS))
        sealed = tuple(dict.fromkeys(str(n) for n in meta.get("previous", []) if n != active))
        return cls(active, sealed)

    @classmethod
    def from_manifest(cls, manifest: Document | None, source: Path) -> Layout:
        """A mongodump (no manifest) is read for the store's collections only; a backup
        from before `kept` was recorded kept every other file it holds."""
        if manifest is None:
            return cls()
        layout = cls(
            manifest.get("eventsCollection", DEFAULT_EVENTS), tuple(manifest.get("sealed", []))
        )
        if "kept" in manifest:
            return layout.keeping(manifest["kept"])
        known = set(layout.collections)
        return layout.keeping(sorted({p.stem for p in source.glob("*.bson")} - known))


@dataclass
class BackupReport:
    head_sequence: int
    counts: dict[str, int] = field(default_factory=dict)
    events_checksum: str = ""
    keys_erased: int = 0
    """On restore: data keys the backup held that the erasure log deleted."""
    own_logs: dict[str, int] = field(default_factory=dict)
    """Each log of its own (its events collection) and its head."""
