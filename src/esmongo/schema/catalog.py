"""The `event_schemas` collection: the seed's event type catalog, kept in the database.

A registered (type, version) schema is immutable: registering it again with a different
JSON Schema is refused, since events already validated against it would no longer match.
Register a new version (with `previous_version`) and an upcaster instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo.codec import Document
from esmongo.errors import SchemaError
from esmongo.events import utc_now
from esmongo.schema.registry import (
    EventSchema,
    SchemaRegistry,
    compile_validator,
    validated_part,
)

COLLECTION = "event_schemas"


class SchemaCatalog:
    """Stores schemas and keeps a registry (shared with the event store) in step."""

    def __init__(self, db: AsyncDatabase[Document], registry: SchemaRegistry) -> None:
        self.collection: AsyncCollection[Document] = db.get_collection(COLLECTION)
        self.registry = registry

    async def init(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel(
                    [("eventType", ASCENDING), ("version", ASCENDING)],
                    unique=True,
                    name="type_version",
                )
            ]
        )

    async def register(self, schema: EventSchema) -> bool:
        """Store one schema. True when it is new; False when the same one is already there."""
        compile_validator(schema.schema)  # refuse a broken schema before storing it
        key = {"eventType": schema.event_type, "version": schema.version}
        existing = await self.collection.find_one(key)
        if existing is None:
            try:
                # The unique (eventType, version) index decides between concurrent
                # registrations: only one process may believe its schema is the stored one.
                await self.collection.insert_one(schema.to_document() | {"createdAt": utc_now()})
            except DuplicateKeyError:
                existing = await self.collection.find_one(key)
            else:
                self.registry.add(schema)
                return True
        if existing is None or validated_part(existing["schema"]) != validated_part(
            dict(schema.schema)
        ):
            raise SchemaError(
                f"{schema.event_type} v{schema.version} is already registered with another "
                "JSON Schema; register a new version and an upcaster instead"
            )
        if existing["schema"] != dict(schema.schema):  # annotations only (x-personal)
            await self.collection.update_one(key, {"$set": {"schema": dict(schema.schema)}})
            existing["schema"] = dict(schema.schema)
        self.registry.add(EventSchema.from_document(existing))
        return False

    async def register_all(self, schemas: Iterable[EventSchema]) -> int:
        """Register several; returns how many were new."""
        return sum([await self.register(s) for s in schemas])

    async def load(self) -> SchemaRegistry:
        """Read every stored schema into the registry."""
        async for doc in self.collection.find():
            self.registry.add(EventSchema.from_document(doc))
        return self.registry

    async def deprecate(self, event_type: str, version: str, at: datetime | None = None) -> None:
        result = await self.collection.update_one(
            {"eventType": event_type, "version": version},
            {"$set": {"deprecatedAt": at or utc_now()}},
        )
        if result.matched_count == 0:
            raise SchemaError(f"{event_type} v{version} is not registered")
