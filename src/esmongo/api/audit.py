"""Who did which operation: one document per rebuild, retry or discard, from the API or the
console, in `operations_log` (and one log line).

Commands need no such record: their events carry who asked in their metadata. Operations
change no event, so without this nothing would tell who retried a dead letter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.api.auth import Principal
from esmongo.events import utc_now

log = logging.getLogger(__name__)
COLLECTION = "operations_log"
"""Not derived from events: `esmongo backup` keeps it, like the API keys."""


@dataclass(frozen=True)
class Operation:
    at: datetime
    action: str
    target: str
    user_id: str
    role: str
    source: str
    outcome: str


class OperationsLog:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection: AsyncCollection[dict[str, Any]] = db.get_collection(COLLECTION)

    async def init(self) -> None:
        await self.collection.create_indexes([IndexModel([("at", DESCENDING)], name="at")])

    async def record(
        self, who: Principal, action: str, target: str, *, source: str, outcome: str
    ) -> None:
        """Written after the operation ran (or failed): the outcome is part of the record."""
        await self.collection.insert_one(
            {
                "at": utc_now(),
                "action": action,
                "target": target,
                "userId": who.user_id,
                "userName": who.user_name,
                "role": str(who.role),
                "keyPrefix": who.key_prefix,
                "source": source,
                "outcome": outcome,
            }
        )
        log.info(
            "%s %s by %s (%s) via %s: %s", action, target, who.user_id, who.role, source, outcome
        )

    async def recent(self, limit: int = 20) -> list[Operation]:
        cursor = self.collection.find({}, sort=[("at", DESCENDING)], limit=limit)
        return [
            Operation(
                d["at"], d["action"], d["target"], d["userId"], d["role"], d["source"], d["outcome"]
            )
            async for d in cursor
        ]
