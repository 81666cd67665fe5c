"""Logical backup and restore of an esmongo database, in mongodump's layout.

`<dir>/<db>/<collection>.bson` (concatenated BSON documents) and
`<collection>.metadata.json` (indexes), so `mongorestore` can read our backups and we can
restore a `mongodump`. The events log is append-only: reading the head sequence first and
then every event up to it gives an exact cut, whatever is appended meanwhile. The counter
is written back as that head, so appends after a restore go on without a gap.

After a migration switch the log is the active collection (esmongo_meta names it), not
`events`; the manifest records its name and restore puts it back under it. The sealed
originals of past migrations are immutable and copied whole, for audit.

Besides the store's collections and the schema catalog, a backup holds the application
collections its caller names (`keep`: e.g. the service's API keys), which cannot be derived
from events either; the manifest lists them, so restore puts them back.

Archived streams (esmongo.store.archive) are in `events_archive` and `archived_streams`; their
sequences are part of the cut. A stream archived while the backup reads `events` may be
half read there: the archive number on the counter, read before `events` and again after,
names those streams, their events are taken out of `events.bson`, and every archived
stream is taken whole from `events_archive`. So each stream is in one file, and the two
event files hold every sequence up to the head exactly once.
"""

from esmongo.ops.backup.dump import backup
from esmongo.ops.backup.files import BackupError
from esmongo.ops.backup.layout import BackupReport, Layout
from esmongo.ops.backup.load import restore

__all__ = ["BackupError", "BackupReport", "Layout", "backup", "restore"]
