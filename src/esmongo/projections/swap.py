"""The last step of a blue/green rebuild, written so that it can be finished by anyone.

Before renaming anything, the rebuild records its intent in the live checkpoint
(`pendingSwap`: which built collection replaces which, and the position the built ones
reached). Then: rename each built collection over the live one (`renameCollection` with
`dropTarget`, atomic for readers), and in one transaction set the live position, move the
rebuild's dead letters over, and clear the intent. A process that dies in between leaves
the intent behind, and the next runner to acquire the lease completes it: a rename is
skipped when its source is gone (already renamed), the transaction runs once.
"""

from __future__ import annotations

import logging

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.dead_letters import DeadLetters
from esmongo.projections.errors import CheckpointConflict

REBUILDS = "projection_rebuilds"
log = logging.getLogger(__name__)


async def collection_exists(db: AsyncDatabase[Document], name: str) -> bool:
    return bool(await db.list_collection_names(filter={"name": name}))


async def finish_swap(db: AsyncDatabase[Document], name: str, fence: int) -> bool:
    """Complete the pending swap of projection `name`, if any. True when one was done."""
    checkpoints = Checkpoints(db)
    checkpoint = await checkpoints.get(name)
    if checkpoint is None or not checkpoint.pending_swap:
        return False
    swap = checkpoint.pending_swap
    for live, built in dict(swap["collections"]).items():
        if await collection_exists(db, built):
            await db.client.admin.command(
                "renameCollection", f"{db.name}.{built}", to=f"{db.name}.{live}", dropTarget=True
            )
            log.info("projection %s: %s now serves as %s", name, built, live)
    position = int(swap["position"])
    shadow = swap.get("shadow")
    dead_letters = DeadLetters(db)
    rebuilds = db.get_collection(REBUILDS, codec_options=CODEC_OPTIONS)

    async def commit(session: AsyncClientSession) -> None:
        result = await checkpoints.collection.update_one(
            {"_id": name, "fence": fence, "pendingSwap": {"$exists": True}},
            {
                "$set": {"position": position, "updatedAt": utc_now(), "blockedAt": None},
                "$inc": {"generation": 1},
                "$unset": {"pendingSwap": ""},
            },
            session=session,
        )
        if result.matched_count != 1:
            raise CheckpointConflict(name, fence, checkpoint.position)
        if shadow:
            # The rebuilt read model replaced the old one, and so do its dead letters.
            await dead_letters.collection.delete_many({"projection": name}, session=session)
            await dead_letters.collection.update_many(
                {"projection": shadow}, {"$set": {"projection": name}}, session=session
            )
            await checkpoints.collection.delete_one({"_id": shadow}, session=session)
        if swap.get("rebuildId"):
            await rebuilds.update_one(
                {"_id": swap["rebuildId"]},
                {"$set": {"status": "swapped", "swappedAt": utc_now(), "position": position}},
                session=session,
            )

    async with db.client.start_session() as session:
        await session.with_transaction(commit)
    log.info("projection %s: swap done at position %d", name, position)
    return True
