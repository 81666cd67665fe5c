"""The write fence: which events collection may take events, kept on the sequence counter.

Every append and every archive increments the counter document first, in its transaction.
The counter therefore also holds `writable`, the one events collection they may write to,
and each of them refuses (EventsCollectionSealed) when it is not its own. A migration switch
or a rollback closes the fence by setting `writable` to None in a transaction of its own:
that write conflicts with every append or archive in flight, so when it commits, every
append ever acknowledged has committed, and no other can until the fence opens again on
the new collection. No DDL is relied on (a `collMod` need not wait for open transactions).
docs/adr/0008-write-fence.md says why and what it costs (nothing: the counter document is
already read back by every append).

A missing `writable` (a database from before the fence) means "whatever is active":
`EventStore.init()` fills it in.
"""

from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.errors import EsmongoError, EventsCollectionSealed
from esmongo.store.collections import ACTIVE, COUNTERS, DEFAULT_EVENTS, META
from esmongo.store.transactions import (
    DURABLE,
    INCARNATION,
    SEQUENCE_COUNTER,
    run_in_transaction,
)
from esmongo.store.transactions import (
    incarnation as incarnation,  # re-exported: every creator of a counter document sets it
)

WRITABLE = "writable"
"""Field of the counter document: the events collection appends may write to (None: none)."""
SEALED_FOR = "sealedFor"
"""Field of the counter document: what closed the fence (a switch's target, or "rollback")."""

FENCES = "fences"
"""Field of the counter document: how many times the fence was closed."""

ARCHIVES = "archives"
"""Field of the counter document: archives committed (esmongo.store.archive)."""
REPAIRS = "repairs"
"""Field of the counter document: repairs committed (esmongo.ops.check.repair)."""
RESTORES = "restores"
"""Field of the counter document: restores from a backup (esmongo.ops.backup)."""

Generation = tuple[int, int, int, int, str]
"""What on the counter document moves when events may have left the events collection."""


def generation(counter: Document) -> Generation:
    """Archives, fence closings, repairs and restores: the only operations that take events
    out of (or swap) the events collection, and each increments its field in a transaction
    that also takes the counter. While the tuple stays the same, an event this process saw
    in the collection is still there: the write path relies on it instead of a query
    (esmongo.store.stream_versions). A restore sets `archives` back, but bumps `restores`;
    a counter created again has another `incarnation`.
    """
    return (
        int(counter.get(ARCHIVES, 0)),
        int(counter.get(FENCES, 0)),
        int(counter.get(REPAIRS, 0)),
        int(counter.get(RESTORES, 0)),
        str(counter.get(INCARNATION, "")),
    )


class FenceHeld(EsmongoError):
    """The write fence is closed by another operation, or open on another collection."""

    code = "write_fence_held"


def refuse_unless_writable(counter: Document, collection: str) -> None:
    """Raise EventsCollectionSealed unless the counter lets `collection` take events."""
    writable = counter.get(WRITABLE, collection)
    if writable == collection:
        return
    if writable is None:
        raise EventsCollectionSealed(
            f"events are paused: {counter.get(SEALED_FOR) or 'a migration'} holds the write "
            "fence (a migration switch or rollback is running; if none is, "
            "`esmongo check --repair` reopens it). Nothing was written: retry shortly"
        )
    raise EventsCollectionSealed(
        f"the events collection {collection} refuses writes: a migration switched the store "
        f"to {writable}. Restart this process so that it opens the active one "
        "(esmongo migrate status)"
    )


async def active_name(
    db: AsyncDatabase[Document], session: AsyncClientSession | None = None
) -> str:
    doc = await db[META].find_one({"_id": ACTIVE}, session=session)
    return str(doc["name"]) if doc else DEFAULT_EVENTS


async def adopt(db: AsyncDatabase[Document], collection: str = DEFAULT_EVENTS) -> None:
    """Set `writable` when the counter has none: from esmongo_meta on a database that has
    events (an older one), or, on a fresh database, to `collection`, the opening store's.

    A fresh database (no event appended, no collection made active) takes a store's own
    collection name, recorded in esmongo_meta too so that every tool (check, backup,
    migrations) finds the same log; otherwise a store that names its collection would be
    refused every append on a database nobody had written to.
    """
    counters = db.get_collection(COUNTERS, write_concern=DURABLE)
    unset = {"_id": SEQUENCE_COUNTER, WRITABLE: {"$exists": False}}
    fresh = {**unset, "value": 0}
    if collection != DEFAULT_EVENTS and await db[META].find_one({"_id": ACTIVE}) is None:

        async def body(session: AsyncClientSession) -> bool:
            taken = await counters.update_one(
                fresh, {"$set": {WRITABLE: collection}}, session=session
            )
            if taken.modified_count:
                await db.get_collection(META, write_concern=DURABLE).update_one(
                    {"_id": ACTIVE},
                    {"$setOnInsert": {"name": collection}},
                    upsert=True,
                    session=session,
                )
            return bool(taken.modified_count)

        if await run_in_transaction(db.client, body):
            return
    await counters.update_one(unset, {"$set": {WRITABLE: await active_name(db)}})


async def close(db: AsyncDatabase[Document], collection: str, reason: str) -> int:
    """Close the fence on `collection` for `reason`; returns the head sequence, final now.

    Retried while appends hold the counter (each conflict is an append committing first).
    Closing again for the same reason is allowed (a switch resumed after a crash); closing
    while the fence is open on another collection, or held for another reason, is not.
    """
    counters = db.get_collection(COUNTERS, write_concern=DURABLE)

    async def body(session: AsyncClientSession) -> int:
        counter = await counters.find_one({"_id": SEQUENCE_COUNTER}, session=session) or {}
        writable = counter.get(WRITABLE, await active_name(db, session))
        held = writable is None and counter.get(SEALED_FOR) == reason
        if writable != collection and not held:
            what = f"held by {counter.get(SEALED_FOR)!r}" if writable is None else writable
            raise FenceHeld(f"cannot pause writes to {collection}: the write fence is {what}")
        after = await counters.find_one_and_update(
            {"_id": SEQUENCE_COUNTER},
            # The $inc makes this a real write even when resuming a closed fence: a no-op
            # update takes no write lock, and so would not conflict with anything.
            {
                "$set": {WRITABLE: None, SEALED_FOR: reason},
                "$inc": {FENCES: 1},
                "$setOnInsert": {"value": 0, **incarnation()},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        assert after is not None
        return int(after["value"])

    return await run_in_transaction(db.client, body)


async def open_on(
    db: AsyncDatabase[Document],
    collection: str,
    reason: str,
    meta_update: Document | None = None,
) -> None:
    """Open the fence on `collection` (closed for `reason`), with the `esmongo_meta` update
    that makes it active, in one transaction: a reader never sees them disagree."""
    counters = db.get_collection(COUNTERS, write_concern=DURABLE)

    async def body(session: AsyncClientSession) -> None:
        result = await counters.update_one(
            {"_id": SEQUENCE_COUNTER, WRITABLE: None, SEALED_FOR: reason},
            {"$set": {WRITABLE: collection}, "$unset": {SEALED_FOR: ""}},
            session=session,
        )
        if result.matched_count != 1:
            raise FenceHeld(f"the write fence is not held by {reason!r}: nothing was changed")
        if meta_update is not None:
            await db.get_collection(META, write_concern=DURABLE).update_one(
                {"_id": ACTIVE}, meta_update, upsert=True, session=session
            )

    await run_in_transaction(db.client, body)
