"""Per-projection checkpoints in `projection_checkpoints`: how far each projection got.

A checkpoint moves only inside the transaction that writes the batch's read-model
changes, and only by compare-and-set on (fence, position): a runner whose lease was taken
over (older fence) or whose checkpoint was moved by someone else (a reset, a dead-letter
retry, a rebuild) fails the write, and its whole batch aborts with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import utc_now
from esmongo.projections.errors import CheckpointConflict
from esmongo.store import InlineSwitch

COLLECTION = "projection_checkpoints"


@dataclass(frozen=True)
class Advance:
    """A checkpoint move, to be applied in a transaction (`Checkpoints.apply`)."""

    name: str
    fence: int
    expected: int
    operation: UpdateOne


@dataclass(frozen=True)
class Checkpoint:
    """One projection's checkpoint as stored."""

    name: str
    position: int
    fence: int
    updated_at: datetime | None
    blocked_at: int | None = None
    """With the STOP policy: the sequence of the dead letter the projection stopped at."""
    generation: int = 0
    """How many blue/green rebuilds were swapped in."""
    stats: Mapping[str, Any] = field(default_factory=dict)
    pending_swap: Mapping[str, Any] | None = None
    inline: bool = False
    """Handed over to the append transactions (esmongo.projections.inline): the position
    is the counter's while the counter says so."""

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Checkpoint:
        return cls(
            name=doc["_id"],
            position=int(doc.get("position", 0)),
            fence=int(doc.get("fence", 0)),
            updated_at=doc.get("updatedAt"),
            blocked_at=doc.get("blockedAt"),
            generation=int(doc.get("generation", 0)),
            stats=doc.get("stats") or {},
            pending_swap=doc.get("pendingSwap"),
            inline=bool(doc.get("inline", False)),
        )


class Checkpoints:
    """Read and move checkpoints."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection: AsyncCollection[Document] = db.get_collection(
            COLLECTION, codec_options=CODEC_OPTIONS
        )
        self.switch = InlineSwitch.of(db)

    async def get(self, name: str, session: AsyncClientSession | None = None) -> Checkpoint | None:
        doc = await self.collection.find_one({"_id": name}, session=session)
        return Checkpoint.from_document(doc) if doc else None

    async def position(self, name: str) -> int:
        """The last sequence the projection applied (0 when it never ran)."""
        checkpoint = await self.get(name)
        return await self.effective(checkpoint) if checkpoint else 0

    async def effective(self, checkpoint: Checkpoint) -> int:
        """The checkpoint's position; for an inline one, the counter's value while it is
        inline, where an append switched it off otherwise."""
        if not checkpoint.inline:
            return checkpoint.position
        state = await self.switch.state(checkpoint.name)
        if state.inline:
            return state.head
        return state.off_at if state.off_at is not None else checkpoint.position

    async def raise_fence(self, name: str, fence: int) -> Checkpoint:
        """Make `fence` the checkpoint's fence (creating it at 0) unless a newer one is there.

        Called by a runner that just acquired the lease with version `fence`: from now on
        the previous holder's checkpoint writes fail. Raises CheckpointConflict when the
        checkpoint already carries a newer fence.
        """
        now = utc_now()
        await self.collection.update_one(
            {"_id": name},
            {
                "$max": {"fence": fence},
                "$setOnInsert": {"position": 0, "createdAt": now, "updatedAt": now},
            },
            upsert=True,
        )
        checkpoint = await self.get(name)
        assert checkpoint is not None
        if checkpoint.fence != fence:
            raise CheckpointConflict(name, fence, checkpoint.position)
        return checkpoint

    def advance(
        self,
        name: str,
        *,
        fence: int,
        expected: int,
        position: int,
        blocked_at: int | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> Advance:
        """The compare-and-set that moves a checkpoint from `expected` to `position`."""
        update: Document = {
            "position": position,
            "updatedAt": utc_now(),
            "blockedAt": blocked_at,
        }
        if stats:
            update["stats"] = dict(stats)
        operation = UpdateOne({"_id": name, "fence": fence, "position": expected}, {"$set": update})
        return Advance(name, fence, expected, operation)

    async def apply(self, session: AsyncClientSession, advances: Sequence[Advance]) -> None:
        """Move these checkpoints in the batch's transaction, in one command. Raises
        CheckpointConflict (for the first, when several) unless every one matched."""
        result = await self.collection.bulk_write(
            [a.operation for a in advances], ordered=True, session=session
        )
        if result.matched_count != len(advances):
            first = advances[0]
            raise CheckpointConflict(first.name, first.fence, first.expected)

    async def move(
        self,
        session: AsyncClientSession | None,
        name: str,
        *,
        expected: int,
        position: int,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set the position without a fence (dead-letter retries, resets)."""
        update: Document = {"position": position, "updatedAt": utc_now(), "blockedAt": None}
        update.update(extra or {})
        result = await self.collection.update_one(
            {"_id": name, "position": expected}, {"$set": update}, session=session
        )
        return result.matched_count == 1

    async def delete(self, name: str) -> None:
        await self.collection.delete_one({"_id": name})

    async def wait_until(self, name: str, sequence: int, timeout_s: float = 10.0) -> int:
        """Wait until projection `name` has applied `sequence` (read-your-writes).

        Works from any process (it polls the checkpoint). Returns the position reached;
        raises TimeoutError after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        pause = 0.002
        while True:
            position = await self.position(name)
            if position >= sequence:
                return position
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"projection {name} is at {position}, not at {sequence}, after {timeout_s}s"
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
