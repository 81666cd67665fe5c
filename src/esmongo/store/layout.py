"""Where the append-only collections live: the log database.

By default one database holds everything. A deployment may keep the collections that only
ever take inserts (the events collections, a migration's copies and sealed originals, the
archive of events) in a database of their own, the *log database*, and everything that is
updated (counters, snapshots, read models, checkpoints, idempotency records, keys, meta) in
the main one. Roles scoped to a database then make the log append-only on MongoDB and on
the embedded server alike, which matches a custom role's privileges by database only
(docs/security.md, docs/adr/0017-log-database.md). Transactions span both databases.

The main database's `esmongo_meta` document that names the active events collection
names the log database too (`db`), so every tool finds the log from the main database.
This module is the one place that resolves it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pymongo import IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import ConfigurationError
from esmongo.store.collections import ACTIVE, COUNTERS, DEFAULT_EVENTS, META
from esmongo.store.transactions import DURABLE, SEQUENCE_COUNTER

LOG_DATABASE = "db"
"""Field of esmongo_meta's active-collection document: the log database's name (absent:
the main database holds the log)."""
RESERVED = frozenset({"admin", "local", "config"})
_NAME = re.compile(r"^[^/\\. \"$*<>:|?]{1,63}$")


class LayoutError(ConfigurationError):
    """The log database cannot be set as asked."""

    code = "layout_error"


def database_named(db: AsyncDatabase[Document], name: str) -> AsyncDatabase[Document]:
    """Database `name` on `db`'s client, with `db`'s codec, concerns and read preference."""
    if name == db.name:
        return db
    return db.client.get_database(
        name,
        codec_options=db.codec_options,
        read_preference=db.read_preference,
        write_concern=db.write_concern,
        read_concern=db.read_concern,
    )


async def log_database_name(
    db: AsyncDatabase[Document], session: AsyncClientSession | None = None
) -> str:
    """The name of the database that holds `db`'s log (`db.name` in the default layout)."""
    doc = await db[META].find_one({"_id": ACTIVE}, {LOG_DATABASE: 1}, session=session)
    name = (doc or {}).get(LOG_DATABASE)
    return str(name) if name else db.name


async def log_database(
    db: AsyncDatabase[Document], session: AsyncClientSession | None = None
) -> AsyncDatabase[Document]:
    """The database that holds `db`'s events collections and archive."""
    return database_named(db, await log_database_name(db, session))


def check_name(main: str, name: str) -> None:
    """LayoutError unless `name` can be a log database beside main database `main`."""
    if not _NAME.match(name):
        raise LayoutError(
            f"{name!r} is not a database name MongoDB accepts (1-63 characters, none of "
            '/\\. "$*<>:|?)'
        )
    if name in RESERVED:
        raise LayoutError(f"{name!r} is MongoDB's own database: choose another log database")
    if name == main:
        raise LayoutError(
            f"the log database must differ from the main database {main!r}: one database "
            "is the default layout, which needs no setting"
        )


async def use_log_database(db: AsyncDatabase[Document], name: str) -> None:
    """Record that `db`'s log lives in database `name`. Idempotent.

    Only before the first event: a log cannot be split from the state built on it while
    appends go on. An existing deployment moves by backup and restore (docs/security.md).
    """
    check_name(db.name, name)
    current = await log_database_name(db)
    if current == name:
        return
    if current != db.name:
        raise LayoutError(
            f"database {db.name} keeps its log in {current!r} already; it cannot move to "
            f"{name!r} (back up, then restore into a new deployment)"
        )
    counter = await db[COUNTERS].find_one({"value": {"$gt": 0}})  # the main log's, or any
    if counter is not None:
        log = "its log" if counter["_id"] == SEQUENCE_COUNTER else f"log {counter['_id']}"
        raise LayoutError(
            f"database {db.name} has {counter['value']} events in {log}: a log database "
            "is set before the first event. Move an existing deployment by `esmongo backup`, "
            f"`esmongo init --log-db {name}` on a new main database, then `esmongo restore`"
        )
    await db.get_collection(META, write_concern=DURABLE).update_one(
        {"_id": ACTIVE},
        {"$set": {LOG_DATABASE: name}, "$setOnInsert": {"name": DEFAULT_EVENTS}},
        upsert=True,
    )


async def layout_record(db: AsyncDatabase[Document]) -> Document:
    """What esmongo_meta says of the layout (for restore, which replaces esmongo_meta)."""
    name = await log_database_name(db)
    return {LOG_DATABASE: name} if name != db.name else {}


async def ensure_indexes(
    collection: AsyncCollection[Document], models: Sequence[IndexModel]
) -> None:
    """Create the indexes `collection` lacks, by name. Reading them first (listIndexes) lets
    a role without createIndex start on a log an operator initialized: on MongoDB,
    createIndexes needs the privilege even when every index exists."""
    present = set(await collection.index_information())
    missing = [m for m in models if m.document["name"] not in present]
    if missing:
        await collection.create_indexes(missing)
