"""The collections esmongo keeps beside the events, by name: one place for every layer.

Persistence (the store, the archive) reads some that services (migrations, backups)
write, so the names live here, below both.
"""

COUNTERS = "counters"
"""The global sequence counter document (and the write fence on it: esmongo.store.fence)."""
DEFAULT_EVENTS = "events"
"""The events collection until a migration switches to another (then see META/ACTIVE)."""
ARCHIVE = "events_archive"
"""Archived streams' events (esmongo.store.archive): the same documents and indexes as events."""
ARCHIVED_STREAMS = "archived_streams"
"""One document per archived stream (esmongo.store.archive.registry_key)."""
SNAPSHOTS = "snapshots"
SNAPSHOT_HISTORY = "snapshot_history"
"""Older snapshots, one per band of versions, for states in the past (esmongo.model.snapshots)."""
META = "esmongo_meta"
ACTIVE = "events_collection"
"""The `_id` of the document in META that names the active events collection."""
MIGRATIONS = "esmongo_migrations"
"""One document per migration run (esmongo.ops.migration)."""
WRITERS = "esmongo_writers"
"""One document per process writing events, with its session ids (esmongo.store.writers)."""
CHAIN_LINKS = "esmongo_chain_links"
"""Hashes an event once had that a later event links to (esmongo.store.chain): written by a
migration's copy when it drops a stream archived while it ran."""


def own_archive(collection: str) -> tuple[str, str]:
    """The archive and its registry of a log numbered by a sequence of its own (an
    EventStore made with `sequence=`; `esmongo check --log`)."""
    return f"{collection}_archive", f"{collection}_archived_streams"


DATA_KEYS = "esmongo_data_keys"
"""One wrapped AES key per data subject (esmongo.store.data_keys): crypto-shredding."""
ERASURES = "esmongo_erasures"
"""One document per forgotten subject's keys: the erasure log a restore replays."""
