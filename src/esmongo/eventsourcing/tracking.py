"""Tracking records: which notification of an upstream application was processed last.

One document per upstream application, `{_id: name, notificationId: n}`, moved forward by
a conditional upsert: `{_id: name, notificationId: {$lt: n}}`. When the document exists
with an id >= n the filter matches nothing, the upsert inserts `_id: name` again, and the
unique `_id` index refuses it (duplicate key: the library's IntegrityError). So a tracking
record is refused when it repeats one or comes after a higher one, as the library's tests
require, and the filter is not an equality, so the server does not retry that upsert.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import Tracking
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from esmongo.codec import Document
from esmongo.store import DocumentWrite
from esmongo.store.unit_of_work import by_collection

NOTIFICATION_ID = "notificationId"
DURABLE = WriteConcern("majority", j=True)


class Trackings:
    """The tracking collection of one application."""

    def __init__(self, db: AsyncDatabase[Document], collection: str) -> None:
        self.name = collection
        self.database = db
        self.collection: AsyncCollection[Document] = db.get_collection(
            collection, write_concern=DURABLE
        )

    @staticmethod
    def _update(tracking: Tracking) -> tuple[Document, Document]:
        return (
            {"_id": tracking.application_name, NOTIFICATION_ID: {"$lt": tracking.notification_id}},
            {"$set": {NOTIFICATION_ID: tracking.notification_id}},
        )

    def write(self, tracking: Tracking) -> DocumentWrite:
        """The record as a unit-of-work write, committed with an append's events."""
        query, update = self._update(tracking)
        return DocumentWrite(self.name, UpdateOne(query, update, upsert=True))

    async def record(self, tracking: Tracking) -> None:
        """The record alone (nothing else to commit with it: one document, atomic)."""
        query, update = self._update(tracking)
        await self.collection.update_one(query, update, upsert=True)

    async def record_with(self, tracking: Tracking, writes: Sequence[DocumentWrite]) -> None:
        """The record and a view's writes in one transaction (PyMongo's with_transaction
        retries it on transient errors), for materialised views without events."""

        async def body(session: AsyncClientSession) -> None:
            query, update = self._update(tracking)
            await self.collection.update_one(query, update, upsert=True, session=session)
            for name, operations in by_collection(writes):
                await self.database[name].bulk_write(operations, ordered=True, session=session)

        async with self.database.client.start_session() as session:
            await session.with_transaction(
                body, read_concern=ReadConcern("snapshot"), write_concern=DURABLE
            )
