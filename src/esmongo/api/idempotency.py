"""`Idempotency-Key` on POSTs: the same key and body replays the first response.

A key is claimed before the command runs (unique `_id`), so two concurrent requests with
the same key cannot both run it. The command itself is idempotent too (stable event ids
derived from the key), so a crash between the append and the stored response cannot
record twice: the retry runs again and the store returns the first recording.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo import utc_now

DEFAULT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


class KeyReused(Exception):
    """The key was used before with another request."""


class KeyInFlight(Exception):
    """The first request with this key has not finished yet."""


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def scoped_key(user_id: str, key: str) -> str:
    """Keys are per caller: two callers may pick the same key."""
    return hashlib.sha256(f"{user_id}\x1f{key}".encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], ttl: timedelta = DEFAULT_TTL) -> None:
        self.collection: AsyncCollection[dict[str, Any]] = db.get_collection("idempotency_keys")
        self.ttl = ttl

    async def init(self) -> None:
        await self.collection.create_indexes(
            [IndexModel([("expiresAt", ASCENDING)], expireAfterSeconds=0, name="ttl")]
        )

    async def claim(self, scoped: str, fingerprint: str) -> StoredResponse | None:
        """Claim the key for this request. Returns the stored response of an earlier one."""
        now = utc_now()
        try:
            await self.collection.insert_one(
                {
                    "_id": scoped,
                    "fingerprint": fingerprint,
                    "status": None,
                    "body": None,
                    "createdAt": now,
                    "expiresAt": now + self.ttl,
                }
            )
            return None
        except DuplicateKeyError:
            pass
        doc = await self.collection.find_one({"_id": scoped})
        if doc is None:  # expired between the two calls: claim again
            return await self.claim(scoped, fingerprint)
        if doc["fingerprint"] != fingerprint:
            raise KeyReused
        if doc["status"] is None:
            raise KeyInFlight
        return StoredResponse(doc["status"], json.loads(doc["body"]))

    async def complete(self, scoped: str, response: StoredResponse) -> None:
        await self.collection.update_one(
            {"_id": scoped},
            {"$set": {"status": response.status, "body": json.dumps(response.body)}},
        )

    async def release(self, scoped: str) -> None:
        """Forget a claim whose request failed unexpectedly, so it can be retried."""
        await self.collection.delete_one({"_id": scoped, "status": None})
