"""API keys with roles, stored hashed in `api_keys`: expiry, rotation, revocation, last use.

Only a SHA-256 of each key is stored: a leaked database does not leak usable keys. Keys
are long random tokens, so a fast hash is enough (no password stretching needed).

Each process caches what it looked up for `cache_seconds` (1 s by default), so a revocation
made by any process takes effect everywhere within that time, at the cost of one indexed
read per key per second per process. Expiry is checked on every request against the
cached expiry time, so it is exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo.events import utc_now

KEY_PREFIX = "esk_"
PREFIX_LENGTH = 12
CACHE_SECONDS = 1.0
"""How long a process trusts what it read of a key: the bound on revocation's delay."""
LAST_USED_EVERY_S = 60.0
"""A key's `lastUsedAt` is written at most this often per process (not on every request)."""


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
    rate_limit: float | None = None
    """Requests per second this key may make in one process; None: the service default."""

    def sees_all_accounts(self) -> bool:
        return self.role != Role.CUSTOMER


@dataclass(frozen=True)
class KeyInfo:
    """What is stored of a key: never the key itself."""

    prefix: str
    role: Role
    user_id: str
    user_name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_limit: float | None
    rotated_to: str | None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> KeyInfo:
        return cls(
            prefix=doc["prefix"],
            role=Role(doc["role"]),
            user_id=doc["userId"],
            user_name=doc["userName"],
            created_at=doc["createdAt"],
            expires_at=doc.get("expiresAt"),
            revoked_at=doc.get("revokedAt"),
            last_used_at=doc.get("lastUsedAt"),
            rate_limit=doc.get("rateLimit"),
            rotated_to=doc.get("rotatedTo"),
        )

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        return Principal(self.user_id, self.user_name, self.role, self.prefix, self.rate_limit)


class KeyNotFound(LookupError):
    """No usable key has this prefix (unknown, revoked or expired)."""


COLLECTION = "api_keys"
"""Not derived from events: `esmongo backup` keeps it (`backup(..., keep=[COLLECTION])`)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_rate(rate_limit: float | None) -> None:
    if rate_limit is not None and not rate_limit > 0:
        raise ValueError(
            f"rate_limit must be a positive number of requests per second, not {rate_limit!r}"
        )


def _check_duration(name: str, value: timedelta | None) -> None:
    if value is not None and value <= timedelta(0):
        raise ValueError(f"{name} must be a positive duration, not {value}")


class ApiKeys:
    """The `api_keys` collection, with a short per-process cache (see the module's docstring).

    `clock` (monotonic seconds) and `now` (wall time) are there so tests can move time.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        cache_seconds: float = CACHE_SECONDS,
        last_used_every_s: float = LAST_USED_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.collection: AsyncCollection[dict[str, Any]] = db.get_collection(COLLECTION)
        self.cache_seconds = cache_seconds
        self.last_used_every_s = last_used_every_s
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._last_used: dict[str, float] = {}

    async def init(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel([("userId", ASCENDING)], name="user"),
                IndexModel([("role", 1)]),
                IndexModel([("prefix", ASCENDING)], name="prefix", unique=True),
            ]
        )

    async def create(
        self,
        role: Role,
        user_id: str,
        user_name: str | None = None,
        *,
        expires_in: timedelta | None = None,
        rate_limit: float | None = None,
    ) -> str:
        """A new key; the only time it is seen in clear."""
        _check_duration("expires_in", expires_in)
        _check_rate(rate_limit)
        created = self._now()
        doc: dict[str, Any] = {
            "role": str(role),
            "userId": user_id,
            "userName": user_name or user_id,
            "createdAt": created,
            "expiresAt": created + expires_in if expires_in is not None else None,
            "revokedAt": None,
            "lastUsedAt": None,
            "rateLimit": rate_limit,
        }
        while True:  # a prefix is 48 random bits: a collision is retried, not reported
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            try:
                await self.collection.insert_one(
                    {"_id": hash_key(key), "prefix": key[:PREFIX_LENGTH]} | doc
                )
            except DuplicateKeyError:
                continue
            return key

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown, revoked or expired key."""
        digest = hash_key(key)
        info = await self._lookup(digest)
        now = self._now()
        if info is None or not info.usable_at(now):
            return None
        await self._touch(digest, now)
        return info.principal()

    async def _lookup(self, digest: str) -> KeyInfo | None:
        at = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and at - cached[0] < self.cache_seconds:
            return cached[1]
        doc = await self.collection.find_one({"_id": digest})
        # The index found the document by its hash; compare in constant time all the same,
        # so no code path's timing depends on how much of a guessed key was right.
        found = (
            KeyInfo.from_document(doc)
            if doc is not None and hmac.compare_digest(doc["_id"], digest)
            else None
        )
        if len(self._cache) > 10_000:  # unknown keys must not grow the cache without bound
            self._cache.clear()
        self._cache[digest] = (at, found)
        return found

    async def _touch(self, digest: str, now: datetime) -> None:
        at = self._clock()
        last = self._last_used.get(digest)
        if last is not None and at - last < self.last_used_every_s:
            return
        self._last_used[digest] = at
        await self.collection.update_one({"_id": digest}, {"$max": {"lastUsedAt": now}})

    async def rotate(
        self,
        prefix: str,
        *,
        grace: timedelta,
        expires_in: timedelta | None = None,
    ) -> str:
        """A new key for the same user, role and rate limit; the old one keeps working for
        `grace`, then expires. Returns the new key (the only time it is seen in clear)."""
        _check_duration("grace", grace)
        old = await self._usable(prefix)
        new_key = await self.create(
            old.role, old.user_id, old.user_name, expires_in=expires_in, rate_limit=old.rate_limit
        )
        ends = self._now() + grace
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        await self.collection.update_one(
            {"prefix": prefix},
            {"$set": {"expiresAt": ends, "rotatedTo": new_key[:PREFIX_LENGTH]}},
        )
        self._cache.clear()
        return new_key

    async def revoke(self, prefix: str) -> bool:
        """Refuse the key from now on (in every process within `cache_seconds`).
        False when no unrevoked key has this prefix."""
        result = await self.collection.find_one_and_update(
            {"prefix": prefix, "revokedAt": None},
            {"$set": {"revokedAt": self._now()}},
            return_document=ReturnDocument.AFTER,
        )
        self._cache.clear()
        return result is not None

    async def list(self, *, include_unusable: bool = False) -> list[KeyInfo]:
        """Every key, newest first; only usable ones unless `include_unusable`."""
        now = self._now()
        found = [
            KeyInfo.from_document(doc)
            async for doc in self.collection.find({}).sort("createdAt", -1)
        ]
        return found if include_unusable else [k for k in found if k.usable_at(now)]

    async def _usable(self, prefix: str) -> KeyInfo:
        doc = await self.collection.find_one({"prefix": prefix})
        info = KeyInfo.from_document(doc) if doc is not None else None
        if info is None or not info.usable_at(self._now()):
            raise KeyNotFound(
                f"no usable API key with prefix {prefix!r} (unknown, revoked or expired)"
            )
        return info


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
