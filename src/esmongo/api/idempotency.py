"""`Idempotency-Key` on POSTs: the same key and body replays the first final response.

The response to a command that records events is stored in the same transaction as those
events (the store's unit of work, `record`): a response exists if and only if the effect
does, so no crash or failed write can leave a key locked or a retry unanswerable. There is
no claim before the command: two requests with one key both run it, and the stable event
ids derived from the key make the second an idempotent retry of the first, which then reads
the stored response. A command refused by the domain records no event; its (final) refusal
is stored with a plain insert (`store`). Transient outcomes (a conflict that outlived its
retries) are never stored: the retry runs again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, InsertOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo.events import utc_now
from esmongo.ops.check import declare_idempotency_records
from esmongo.store.unit_of_work import DocumentWrite

DEFAULT_TTL = timedelta(hours=24)
COLLECTION = "idempotency_keys"
declare_idempotency_records(COLLECTION)  # `esmongo check` reads its claims and responses


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


class KeyReused(Exception):
    """The key was used before with another request."""


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def scoped_key(user_id: str, key: str) -> str:
    """Keys are per caller: two callers may pick the same key."""
    return hashlib.sha256(f"{user_id}\x1f{key}".encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], ttl: timedelta = DEFAULT_TTL) -> None:
        self.collection: AsyncCollection[dict[str, Any]] = db.get_collection(COLLECTION)
        self.ttl = ttl

    async def init(self) -> None:
        await self.collection.create_indexes(
            [IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="ttl")]
        )

    async def find(self, scoped: str, fingerprint: str) -> StoredResponse | None:
        """The response stored under the key; KeyReused if it answered another request."""
        doc = await self.collection.find_one({"_id": scoped})
        if doc is None:
            return None
        if doc.get("status") is None:
            # A claim left by a version that claimed keys before running the command: it
            # answers nothing; the stable event ids make running the command again safe.
            await self.collection.delete_one({"_id": scoped, "status": None})
            return None
        if doc["fingerprint"] != fingerprint:
            raise KeyReused
        return StoredResponse(doc["status"], json.loads(doc["body"]))

    def _document(self, scoped: str, fingerprint: str, response: StoredResponse) -> dict[str, Any]:
        now = utc_now()
        return {
            "_id": scoped,
            "fingerprint": fingerprint,
            "status": response.status,
            "body": json.dumps(response.body),
            "createdAt": now,
            "expiresAt": now + self.ttl,
        }

    def record(self, scoped: str, fingerprint: str, response: StoredResponse) -> DocumentWrite:
        """The write that stores `response` in the transaction of the events it answers for.

        Its unique `_id` fails that append alone if the key answered another request first.
        """
        document = self._document(scoped, fingerprint, response)
        return DocumentWrite(COLLECTION, InsertOne(document))

    async def store(
        self, scoped: str, fingerprint: str, response: StoredResponse
    ) -> StoredResponse:
        """Store a final response that recorded no event; the earlier one if there is one
        (KeyReused if it answered another request)."""
        for _ in range(3):
            try:
                await self.collection.insert_one(self._document(scoped, fingerprint, response))
                return response
            except DuplicateKeyError:
                earlier = await self.find(scoped, fingerprint)
                if earlier is not None:
                    return earlier
        return response  # the key keeps expiring under us: answer without storing
