"""API keys with roles, stored hashed in `api_keys`.

Only a SHA-256 of each key is stored: a leaked database does not leak usable keys. Keys
are long random tokens, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.events import utc_now

KEY_PREFIX = "esk_"
CACHE_SECONDS = 10.0


class Role(StrEnum):
    ADMIN = "admin"
    """Everything, operations included."""
    TELLER = "teller"
    """Every account command and read."""
    AUDITOR = "auditor"
    """Read-only, all accounts, history and events included."""
    CUSTOMER = "customer"
    """Only their own accounts: open, read, debit and transfer out."""


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    user_id: str
    user_name: str
    role: Role
    key_prefix: str

    def sees_all_accounts(self) -> bool:
        return self.role != Role.CUSTOMER


COLLECTION = "api_keys"
"""Not derived from events: `esmongo backup` keeps it (`backup(..., keep=[COLLECTION])`)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The `api_keys` collection, with a short cache so each request is not a round trip."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection: AsyncCollection[dict[str, Any]] = db.get_collection(COLLECTION)
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def init(self) -> None:
        await self.collection.create_indexes(
            [IndexModel([("userId", ASCENDING)], name="user"), IndexModel([("role", 1)])]
        )

    async def create(self, role: Role, user_id: str, user_name: str | None = None) -> str:
        """A new key; the only time it is seen in clear."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        await self.collection.insert_one(
            {
                "_id": hash_key(key),
                "prefix": key[:12],
                "role": str(role),
                "userId": user_id,
                "userName": user_name or user_id,
                "createdAt": utc_now(),
                "revokedAt": None,
            }
        )
        return key

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key."""
        digest = hash_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        doc = await self.collection.find_one({"_id": digest, "revokedAt": None})
        principal = (
            Principal(doc["userId"], doc["userName"], Role(doc["role"]), doc["prefix"])
            if doc
            else None
        )
        self._cache[digest] = (now, principal)
        return principal

    async def revoke(self, prefix: str) -> bool:
        result = await self.collection.update_one(
            {"prefix": prefix, "revokedAt": None}, {"$set": {"revokedAt": utc_now()}}
        )
        self._cache.clear()
        return result.modified_count == 1

    async def has_role(self, role: Role) -> bool:
        return await self.collection.find_one({"role": str(role), "revokedAt": None}) is not None


async def ensure_dev_admin_key(keys: ApiKeys, path: Path) -> str:
    """The development admin key of an embedded database: created on first start.

    Kept in clear in `path` (mode 600, beside the embedded data) so each start can print
    it; production keys are made with `esmongo keys create` and never stored in clear.
    """
    known = await asyncio.to_thread(_read_key, path)
    if known is not None and await keys.verify(known) is not None:
        return known
    key = await keys.create(Role.ADMIN, "dev-admin", "Development admin")
    await asyncio.to_thread(_write_key, path, key)
    return key


def _read_key(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
