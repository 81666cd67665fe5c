"""Data keys for crypto-shredding: one AES-256 key per data subject, wrapped by a master key.

A data key is stored only wrapped (AES-GCM under a master key, bound to the key's id and
subject), in `esmongo_data_keys`; the master keys come from the environment
(`ESMONGO_MASTER_KEY`), never from the database, so a copy of the database opens nothing.
Forgetting a subject deletes its keys: every field encrypted with them is unreadable for
good, while the events that hold them stay, unchanged, in the chain. Each erasure is also
a document of `esmongo_erasures` (subject, key ids, time), which restores replay so that an
older backup cannot bring a forgotten key back (esmongo.ops.erasures).

Unwrapped keys are cached per process for at most CACHE_SECONDS (and CACHE_SIZE keys), as
API keys are: a forget made by another process takes effect here within that time.

`cryptography` is imported only when a key is used: the core install runs without it.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from esmongo.codec import Document
from esmongo.errors import MasterKeyError, UnknownSubjectError
from esmongo.events import utc_now
from esmongo.store.collections import DATA_KEYS, ERASURES
from esmongo.store.transactions import DURABLE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_ENV = "ESMONGO_MASTER_KEY"
"""`id:base64-of-32-bytes`, or several separated by commas: the first wraps new keys (and
re-wraps old ones on `esmongo crypto rewrap`), the others still open what they wrapped."""
CACHE_SECONDS = 10.0
CACHE_SIZE = 10_000
NONCE_BYTES = 12


def aes(key: bytes) -> AESGCM:
    """AES-GCM with this key (imports `cryptography`, the `crypto` extra)."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the extra is installed where tested
        raise MasterKeyError(
            "encrypting personal data needs the `cryptography` library: "
            "pip install 'esmongo[crypto]'"
        ) from exc
    return AESGCM(key)


def invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def new_master_key() -> str:
    """A fresh master key in the form MASTER_KEY_ENV takes, named by its creation date."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"mk-{utc_now():%Y%m%d%H%M%S}:{key}"


@dataclass(frozen=True)
class MasterKeys:
    """The master keys of this process: the current one first."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str, where: str = MASTER_KEY_ENV) -> MasterKeys:
        keys: list[tuple[str, bytes]] = []
        for index, item in enumerate(part.strip() for part in text.split(",")):
            key_id, colon, encoded = item.partition(":")
            if not colon or not key_id or not encoded:
                raise MasterKeyError(
                    f"{where}: key #{index + 1} must be 'id:base64-key', not {_hint(item)}"
                )
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError) as exc:
                raise MasterKeyError(f"{where}: key {key_id!r} is not base64") from exc
            if len(key) != 32:
                raise MasterKeyError(
                    f"{where}: key {key_id!r} is {len(key)} bytes, not 32 "
                    "(make one with `esmongo crypto new-master-key`)"
                )
            if key_id in dict(keys):
                raise MasterKeyError(f"{where}: key id {key_id!r} is given twice")
            keys.append((key_id, key))
        return cls(tuple(keys))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MasterKeys | None:
        """The keys in MASTER_KEY_ENV; None when it is not set (personal data in clear)."""
        text = (os.environ if environ is None else environ).get(MASTER_KEY_ENV, "").strip()
        return cls.parse(text) if text else None

    @property
    def current(self) -> str:
        return self.keys[0][0]

    def wrap(self, key_id: str, subject: str, data_key: bytes) -> bytes:
        """`data_key` sealed under the current master key, bound to its id and subject."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + aes(self.keys[0][1]).encrypt(nonce, data_key, _bound(key_id, subject))

    def unwrap(self, master_id: str, key_id: str, subject: str, wrapped: bytes) -> bytes:
        master = dict(self.keys).get(master_id)
        held = ", ".join(k for k, _ in self.keys)
        if master is None:
            raise MasterKeyError(
                f"data key {key_id} was wrapped by master key {master_id!r}, which "
                f"{MASTER_KEY_ENV} does not hold (it holds: {held}); add it after the "
                "current one until `esmongo crypto rewrap` has run"
            )
        try:
            return aes(master).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _bound(key_id, subject)
            )
        except invalid_tag() as exc:
            raise MasterKeyError(
                f"master key {master_id!r} in {MASTER_KEY_ENV} does not open data key "
                f"{key_id}: it is not the key that wrapped it (wrong key under that id?)"
            ) from exc


def _bound(key_id: str, subject: str) -> bytes:
    return f"{key_id}\x1f{subject}".encode()


def _hint(item: str) -> str:
    """What was given, without printing a secret."""
    return f"{len(item)} characters without ':'" if item else "an empty string"


@dataclass(frozen=True)
class Erasure:
    """One `forget`: the subject, the ids of the keys deleted, when; `already` when the
    subject had no key left (forgotten before)."""

    subject: str
    keys: tuple[str, ...]
    at: datetime
    already: bool = False

    def to_document(self) -> Document:
        return {"subject": self.subject, "keys": list(self.keys), "at": self.at}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Erasure:
        return cls(str(doc["subject"]), tuple(doc.get("keys", ())), doc["at"])


@dataclass
class _Cache:
    """At most `size` entries, each for `seconds`: an unwrapped key, or None for one that
    is gone (a forgotten subject's events replay without a read per event)."""

    seconds: float
    size: int
    entries: OrderedDict[str, tuple[float, Any]] = field(default_factory=OrderedDict)

    def get(self, name: str) -> tuple[bool, Any]:
        found = self.entries.get(name)
        if found is None or time.monotonic() - found[0] > self.seconds:
            return False, None
        return True, found[1]

    def put(self, name: str, value: Any) -> None:
        self.entries[name] = (time.monotonic(), value)
        self.entries.move_to_end(name)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def drop(self, name: str) -> None:
        self.entries.pop(name, None)


class DataKeys:
    """The data keys of a database: made on first use per subject, cached, forgotten."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        master: MasterKeys | None,
        *,
        cache_seconds: float = CACHE_SECONDS,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.master = master
        self.keys: AsyncCollection[Document] = db.get_collection(DATA_KEYS, write_concern=DURABLE)
        self.erasures: AsyncCollection[Document] = db.get_collection(
            ERASURES, write_concern=DURABLE
        )
        self._by_subject = _Cache(cache_seconds, cache_size)
        self._by_id = _Cache(cache_seconds, cache_size)
        self._in_use = False
        self._in_use_checked = -float("inf")

    async def init(self) -> None:
        await self.keys.create_indexes(
            [IndexModel([("subject", ASCENDING)], unique=True, name="one_key_per_subject")]
        )
        await self.erasures.create_indexes(
            [IndexModel([("subject", ASCENDING), ("at", ASCENDING)], name="subject_time")]
        )

    async def in_use(self) -> bool:
        """Whether this database holds data keys: then personal data must not be written in
        clear by a process that lacks the master key. A "no" is asked again after
        CACHE_SECONDS: not two reads on every append of a database that never encrypts."""
        if self._in_use or time.monotonic() - self._in_use_checked < self._by_id.seconds:
            return self._in_use
        found = await self.keys.find_one({}, {"_id": 1})
        self._in_use = found is not None or await self.erasures.find_one({}) is not None
        self._in_use_checked = time.monotonic()
        return self._in_use

    def _master(self, why: str) -> MasterKeys:
        if self.master is None:
            raise MasterKeyError(
                f"{MASTER_KEY_ENV} is not set, and {why}: set it to the master key(s) this "
                "database's data keys are wrapped with"
            )
        return self.master

    async def for_subject(self, subject: str) -> tuple[str, AESGCM]:
        """The subject's key (its id and cipher), made and stored when it has none."""
        hit, found = self._by_subject.get(subject)
        if hit:
            return found  # type: ignore[no-any-return]
        master = self._master(f"personal data of {subject!r} is to be encrypted")
        doc = await self.keys.find_one({"subject": subject})
        if doc is None:
            key_id = f"dk_{secrets.token_hex(12)}"
            key = os.urandom(32)
            doc = {
                "_id": key_id,
                "subject": subject,
                "master": master.current,
                "wrapped": Binary(master.wrap(key_id, subject, key)),
                "createdAt": utc_now(),
            }
            try:
                await self.keys.insert_one(doc)
            except DuplicateKeyError:  # another process made it first: use theirs
                doc = await self.keys.find_one({"subject": subject})
                if doc is None:  # and forgot it at once
                    raise
                key = self._unwrap(doc)
        else:
            key = self._unwrap(doc)
        entry = (str(doc["_id"]), aes(key))
        self._in_use = True
        self._by_subject.put(subject, entry)
        self._by_id.put(entry[0], entry[1])
        return entry

    async def opener(self, key_id: str) -> AESGCM | None:
        """The cipher of a data key by id; None when it was deleted (its subject forgotten)."""
        hit, found = self._by_id.get(key_id)
        if hit:
            return found  # type: ignore[no-any-return]
        doc = await self.keys.find_one({"_id": key_id})
        cipher = None if doc is None else aes(self._unwrap(doc))
        self._by_id.put(key_id, cipher)
        return cipher

    async def load(self, key_ids: set[str]) -> None:
        """Cache these keys (those not cached yet) with one read: a replay asks once per
        batch of events, not once per subject."""
        missing = [key_id for key_id in key_ids if not self._by_id.get(key_id)[0]]
        if not missing:
            return
        async for doc in self.keys.find({"_id": {"$in": missing}}):
            self._by_id.put(str(doc["_id"]), aes(self._unwrap(doc)))
        for key_id in missing:
            if not self._by_id.get(key_id)[0]:
                self._by_id.put(key_id, None)  # forgotten

    def _unwrap(self, doc: Mapping[str, Any]) -> bytes:
        master = self._master(f"data key {doc['_id']} is needed to read personal data")
        return master.unwrap(
            str(doc["master"]), str(doc["_id"]), str(doc["subject"]), bytes(doc["wrapped"])
        )

    async def forget(self, subject: str) -> Erasure:
        """Delete the subject's keys, after recording the erasure (so a crash in between
        leaves a log entry that a restore, or the next forget, completes). Forgetting again
        is harmless (`already`); a subject never seen is UnknownSubjectError."""
        ids = tuple([str(doc["_id"]) async for doc in self.keys.find({"subject": subject})])
        now = utc_now()
        if not ids:
            before = await self.erasures.find_one({"subject": subject}, sort=[("at", -1)])
            if before is None:
                raise UnknownSubjectError(subject)
            return Erasure(subject, (), now, already=True)
        erasure = Erasure(subject, ids, now)
        await self.erasures.insert_one(erasure.to_document())
        await self.keys.delete_many({"_id": {"$in": list(ids)}})
        self.evict(subject, ids)
        return erasure

    def evict(self, subject: str, ids: tuple[str, ...]) -> None:
        self._by_subject.drop(subject)
        for key_id in ids:
            self._by_id.drop(key_id)

    async def apply(self, erasures: list[Erasure]) -> int:
        """Delete every key these erasures name, and log the ones not logged here (a
        restore replaying the current erasure log). The number of keys deleted."""
        deleted = 0
        for erasure in erasures:
            known = await self.erasures.find_one(
                {"subject": erasure.subject, "keys": list(erasure.keys)}
            )
            if known is None:
                await self.erasures.insert_one(erasure.to_document())
            result = await self.keys.delete_many({"_id": {"$in": list(erasure.keys)}})
            deleted += result.deleted_count
            self.evict(erasure.subject, erasure.keys)
        return deleted

    async def erased_keys(self, subject: str) -> list[str]:
        """The ids of every key of the subject that an erasure deleted."""
        cursor = self.erasures.find({"subject": subject}, {"keys": 1})
        return [str(key) async for doc in cursor for key in doc.get("keys", ())]

    async def logged(self, subject: str | None = None) -> list[Erasure]:
        """Every erasure recorded in this database (of one subject), oldest first."""
        query = {} if subject is None else {"subject": subject}
        cursor = self.erasures.find(query, sort=[("at", 1)])
        return [Erasure.from_document(d) async for d in cursor]

    async def rewrap(self) -> tuple[int, int]:
        """Re-wrap every data key not wrapped by the current master key with it. Returns
        (re-wrapped, already current). Idempotent; safe to run again after a crash."""
        master = self._master("re-wrapping needs the new and the old master keys")
        done = current = 0
        async for doc in self.keys.find({}):
            if doc["master"] == master.current:
                current += 1
                continue
            key = self._unwrap(doc)
            wrapped = Binary(master.wrap(str(doc["_id"]), str(doc["subject"]), key))
            result = await self.keys.update_one(
                {"_id": doc["_id"], "master": doc["master"]},
                {"$set": {"master": master.current, "wrapped": wrapped}},
            )
            done += result.modified_count
        return done, current
