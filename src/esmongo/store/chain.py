"""The tamper-evident chain: each event's `hash` covers its content and the previous
event's hash (`prev`), in global-sequence order.

    prev(N) = hash(N-1)
    hash(N) = SHA-256( prev(N) as hex | canonical BSON of event N without _id, prev, hash )

Canonical BSON: the stored fields with keys sorted at every depth, encoded with the codec
every collection uses, so a document read back hashes to what was written. Rewriting an
event's data or metadata, moving it to another sequence, or deleting it breaks the chain
from there on (esmongo.ops.verify names the first broken sequence).

On the write path the chain costs hashing and, usually, nothing else: the batch writer
keeps the head it committed last (`ChainHead`), and a transaction that starts right after
it links to it from memory. When another process committed in between, the previous event
is read by `_id` inside the transaction; the counter's write conflict guarantees that the
transaction's snapshot holds it (no transaction can take sequences after another one's
without that one having committed: esmongo.store.event_store).

Events written before the chain existed have no `hash`; the first chained event links to
the empty string, as the very first event does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import bson
from bson.int64 import Int64
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import CODEC_OPTIONS, Document

HASH = "hash"
"""The field of an event document that holds its link in the chain."""
PREV = "prev"
"""The field that holds the previous event's hash ("" for none)."""
SOURCE_HASH = "sourceHash"
"""On an event a migration copied and re-chained: its hash in the original collection."""
UNCHAINED = ("_id", HASH, PREV)


def _sorted(value: Any) -> Any:
    """Keys sorted at every depth; every integer as a 64-bit one (BSON keeps 32-bit and
    64-bit integers apart, and a read gives both back as `int`)."""
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return Int64(value)
    return value


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes the chain covers: every stored field but `_id`, `prev` and `hash`, keys
    sorted."""
    content = {key: value for key, value in doc.items() if key not in UNCHAINED}
    return bson.encode(_sorted(content), codec_options=CODEC_OPTIONS)


def unchained(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` without what the chain adds: what a migration's copy must keep as it was."""
    return {key: value for key, value in doc.items() if key not in (PREV, HASH, SOURCE_HASH)}


def relink(previous: str, doc: Document) -> str:
    """Chain a copy of an event after `previous` (a migration's target); when its hash
    differs from the original's, record the original's in `sourceHash`. The new hash."""
    original = doc.pop(HASH, None)
    doc.pop(SOURCE_HASH, None)
    doc[PREV] = previous
    digest = link(previous, doc)
    if original is not None and digest != original:
        doc[SOURCE_HASH] = original
        digest = link(previous, doc)
    doc[HASH] = digest
    return digest


def link(previous: str, doc: Mapping[str, Any]) -> str:
    """The hash of `doc` following an event whose hash is `previous` ("" for none)."""
    return hashlib.sha256(previous.encode("ascii") + canonical(doc)).hexdigest()


def chain(previous: str, docs: list[Document]) -> str:
    """Set `prev` and `hash` on each of `docs` (consecutive sequences, in order); the
    last hash."""
    for doc in docs:
        doc[PREV] = previous
        previous = doc[HASH] = link(previous, doc)
    return previous


class ChainHead:
    """The last link this process committed, so the next transaction need not read it.

    Trusted only while the counter's generation (esmongo.store.fence.generation: archives,
    repairs, restores) is the one it was committed at, as the write path trusts heads."""

    def __init__(self) -> None:
        self.sequence = -1
        self.hash = ""
        self.generation: object = None

    def committed(self, sequence: int, hash_: str, generation: object) -> None:
        self.sequence, self.hash, self.generation = sequence, hash_, generation

    async def before(
        self,
        sequence: int,
        logs: list[AsyncCollection[Document]],
        session: AsyncClientSession,
        generation: object = None,
    ) -> str:
        """The hash of the event at `sequence` (the one before a batch): from memory when
        this process wrote it at this `generation`, else read in `session` from the first
        of `logs` that holds it (the active events, then the archive). "" before the first
        event, for an event written before the chain existed, and for one that is missing
        (verify reports it)."""
        if sequence == 0:
            return ""
        if sequence == self.sequence and generation == self.generation:
            return self.hash
        for log in logs:
            doc = await log.find_one({"_id": sequence}, {HASH: 1}, session=session)
            if doc is not None:
                return str(doc.get(HASH, ""))
        return ""
