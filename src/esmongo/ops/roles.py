"""The MongoDB roles that make the log append-only (`esmongo init --roles`).

Three roles per deployment, created in `admin` (a role that grants on two databases must
live there on MongoDB), named after the main database:

- `<main>_writer`, for the service and the projection daemon: on the log database `find`
  and `insert` only (no update, remove, drop, rename or DDL: history cannot be rewritten
  through it), on the main database what appends, projections and idempotency need
  (read, insert, update, remove, and createIndex for the indexes each part makes at start).
- `<main>_reader`: reads and change streams on both databases, nothing else.
- `<main>_operator`, for migrations, archives, backup/restore and check/repair: reads,
  writes and the DDL they need (create, drop, rename, collMod, indexes) on both.

The privileges name whole databases, not collections: the embedded server matches a custom
role's resource by database only (docs/mongodb.md), and the main database's collections
are open-ended (read models are named by projections). So the roles need the log in a
database of its own (esmongo.store.layout); in the one-database layout they are refused.
docs/security.md says which process runs with which role; ADR 0017 why.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import ConfigurationError
from esmongo.store.layout import log_database_name

READS = ("find", "listCollections", "listIndexes", "changeStream", "killCursors")
WRITER_LOG = (*READS, "insert")
WRITER_MAIN = (*READS, "insert", "update", "remove", "createIndex")
OPERATOR = (
    *READS,
    "insert",
    "update",
    "remove",
    "createCollection",
    "createIndex",
    "dropIndex",
    "dropCollection",
    "renameCollectionSameDB",
    "collMod",
    "collStats",
    "dbStats",
)
ROLES_DB = "admin"


@dataclass(frozen=True)
class Role:
    name: str
    privileges: list[Document]
    created: bool = False
    """False: it existed and was updated to these privileges."""


def _grant(db: str, actions: tuple[str, ...]) -> Document:
    return {"resource": {"db": db, "collection": ""}, "actions": sorted(set(actions))}


def role_names(main: str) -> dict[str, str]:
    """The role of each kind (writer, reader, operator) of main database `main`."""
    return {kind: f"{main}_{kind}" for kind in ("writer", "reader", "operator")}


def privileges(main: str, log: str) -> dict[str, list[Document]]:
    """Each role's privileges (role name -> privileges) for main database `main` and log
    database `log`."""
    if main == log:
        raise ConfigurationError(
            f"database {main} keeps its log with its other collections: a role scoped to it "
            "could rewrite events. Append-only roles need the log in a database of its own: "
            "`esmongo init --roles --log-db NAME` on a deployment with no events yet "
            "(docs/security.md says how to move an existing one)"
        )
    names = role_names(main)
    return {
        names["writer"]: [_grant(log, WRITER_LOG), _grant(main, WRITER_MAIN)],
        names["reader"]: [_grant(log, READS), _grant(main, READS)],
        names["operator"]: [_grant(log, OPERATOR), _grant(main, OPERATOR)],
    }


async def ensure_roles(db: AsyncDatabase[Document]) -> list[Role]:
    """Create the roles of `db` (the main database), or set an existing one's privileges
    back to these. Idempotent. Needs a user that may manage roles on `admin`."""
    admin = db.client.get_database(ROLES_DB)
    wanted = privileges(db.name, await log_database_name(db))
    done = []
    for name, granted in wanted.items():
        info = await admin.command("rolesInfo", {"role": name, "db": ROLES_DB})
        if info.get("roles"):
            await admin.command("updateRole", name, privileges=granted, roles=[])
            done.append(Role(name, granted))
        else:
            await admin.command("createRole", name, privileges=granted, roles=[])
            done.append(Role(name, granted, created=True))
    return done
