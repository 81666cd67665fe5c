"""What one infrastructure factory holds: a loop thread, one client, and the event stores.

Every recorder a factory makes shares them, so that its threads' appends to one events
collection meet in one store and share transactions (group commit). The events collections
live in the deployment's log database (esmongo.store.layout: the main one by default), where
the writer role may only insert; counters and tracking records stay in the main one.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from bson.errors import InvalidDocument
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect import Connection, Settings
from esmongo.connect.embedded import EmbeddedServer
from esmongo.errors import (
    AppendConditionFailed,
    ConcurrencyError,
    ConfigurationError,
    EventsCollectionSealed,
)
from esmongo.eventsourcing.loop import LoopThread
from esmongo.store import EventStore
from esmongo.store.collections import COUNTERS
from esmongo.store.layout import log_database

T = TypeVar("T")

DUPLICATE_KEY = 11000

_embedded: EmbeddedServer | None = None
_embedded_lock = threading.Lock()


def embedded_uri() -> str:
    """The embedded server (ESMONGO_HOME), started once for every factory of this process
    and stopped at exit: a server owned by one factory would stop when that application
    closes, under the others of its System."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            server = EmbeddedServer(Settings.from_env().home)
            server.start()
            server.keep_alive()  # another process may own it, and stop it
            atexit.register(server.stop)
            _embedded = server
        return _embedded.uri


class Datastore:
    """The connection of one factory, opened on its loop thread."""

    def __init__(self, uri: str | None, database: str, *, name: str) -> None:
        self.database_name = database
        self._loop = LoopThread(name=f"esmongo-eventsourcing:{name or 'factory'}")
        self._connection = Connection(
            Settings(mongodb_uri=uri or embedded_uri(), database=database)
        )
        self._stores: dict[str, EventStore] = {}
        try:
            self.log_db = self.run(self._open())
        except BaseException:
            self._loop.close()
            raise
        self._reads: MongoClient[Document] = MongoClient(self._connection.uri)

    async def _open(self) -> AsyncDatabase[Document]:
        await self._connection.open()
        return await log_database(self.db)

    @property
    def db(self) -> AsyncDatabase[Document]:
        return self._connection.db

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop; the driver's and the store's errors as the
        `eventsourcing` library's (IntegrityError for a conflict, and so on)."""
        with translated():
            try:
                return self._loop.run(coroutine)
            except RuntimeError as exc:
                if not self._loop.running:
                    raise InterfaceError(str(exc)) from exc
                raise

    def collection(self, name: str, *, log: bool = False) -> Collection[Document]:
        """A collection of the main database (`log`: of the log database) through the
        synchronous client, for reads in the caller's thread: they have no transaction
        logic to share, and skip the hop to the loop (measured in docs/eventsourcing.md)."""
        database = self.log_db.name if log else self.database_name
        return self._reads.get_database(database, codec_options=CODEC_OPTIONS).get_collection(name)

    def store(self, collection: str) -> EventStore:
        """The event store of `collection`, numbered by its own sequence (one per factory)."""
        found = self._stores.get(collection)
        if found is None:
            found = self.run(self._new_store(collection))
            found = self._stores.setdefault(collection, found)
        return found

    async def _new_store(self, collection: str) -> EventStore:
        if self.log_db.name != self.db.name and await self.db[collection].find_one({}, {"_id": 1}):
            raise ConfigurationError(
                f"{self.db.name}.{collection} holds events, but this deployment keeps its logs "
                f"in {self.log_db.name}: move the collection there (as a user with "
                f"renameCollection on both databases: db.adminCommand({{renameCollection: "
                f'"{self.db.name}.{collection}", to: "{self.log_db.name}.{collection}"}}), '
                "and its archive likewise) before starting the application"
            )
        return EventStore(self.db, log_db=self.log_db, collection=collection, sequence=collection)

    def close(self) -> None:
        """Stop the stores' writer heartbeats, close the client, stop the loop. Idempotent."""
        if self._loop.running:
            stores, self._stores = list(self._stores.values()), {}
            self.run(self._close(stores))
        self._reads.close()
        self._loop.close()

    async def _close(self, stores: list[EventStore]) -> None:
        for store in stores:
            await store.writers.close()
        await self._connection.close()


class OwnLog:
    """What a recorder of one events collection holds: its store, for writes on the
    factory's loop, and the collection for reads in the caller's thread (the sync client)."""

    def __init__(self, datastore: Datastore, events_collection: str) -> None:
        self.datastore = datastore
        self.events_collection = events_collection
        self.store: EventStore = datastore.store(events_collection)
        self.reads = datastore.collection(events_collection, log=True)

    def counter(self) -> Document | None:
        """The log's counter document: its head (`value`) and generation."""
        return self.datastore.collection(COUNTERS).find_one({"_id": self.store.sequence})


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """The driver's and the store's errors as the `eventsourcing` library's."""
    try:
        yield
    except (ConcurrencyError, AppendConditionFailed) as exc:
        raise IntegrityError(str(exc)) from exc
    except DuplicateKeyError as exc:
        raise IntegrityError(str(exc)) from exc
    except BulkWriteError as exc:
        errors = (exc.details or {}).get("writeErrors") or []
        if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
            raise IntegrityError(str(exc)) from exc
        raise DataError(str(exc)) from exc
    except InvalidDocument as exc:
        raise DataError(str(exc)) from exc
    except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
        raise OperationalError(str(exc)) from exc
    except (EventsCollectionSealed, ConfigurationError) as exc:
        raise OperationalError(str(exc)) from exc
    except PyMongoError as exc:
        raise DatabaseError(str(exc)) from exc
