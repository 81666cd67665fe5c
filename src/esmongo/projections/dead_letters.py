"""Dead letters in `dead_letters`: events a projection's handler kept failing on.

A dead letter is written in the same transaction as the checkpoint that skips (or stops
before) its event, so it is recorded exactly when the read model missed the event. It can
be listed, retried (the event is applied through the projection again, in one transaction
with the dead letter's removal) or discarded. For a projection stopped by its STOP policy,
a retry or a discard also moves the checkpoint past the event, which lets it go on.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.events import RecordedEvent, utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.errors import DeadLetterError
from esmongo.projections.projection import Projection
from esmongo.projections.writes import WritePlan, execute
from esmongo.store import EventStore

COLLECTION = "dead_letters"
INDEXES = [
    IndexModel([("projection", ASCENDING), ("sequence", ASCENDING)], unique=True, name="event"),
    IndexModel([("lastFailureAt", ASCENDING)], name="last_failure"),
]


@dataclass(frozen=True)
class Failure:
    """A handler that failed on an event, after `attempts` calls."""

    event: RecordedEvent
    error: BaseException
    attempts: int

    @property
    def traceback(self) -> str:
        return "".join(tb.format_exception(self.error))


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as stored."""

    projection: str
    sequence: int
    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    error: str
    error_type: str
    traceback: str
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    policy: str

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DeadLetter:
        return cls(
            projection=doc["projection"],
            sequence=int(doc["sequence"]),
            event_id=doc["eventId"],
            event_type=doc["eventType"],
            aggregate_type=doc["aggregateType"],
            aggregate_id=doc["aggregateId"],
            error=doc["error"],
            error_type=doc["errorType"],
            traceback=doc["traceback"],
            attempts=int(doc["attempts"]),
            first_failure_at=doc["firstFailureAt"],
            last_failure_at=doc["lastFailureAt"],
            policy=doc.get("policy", ""),
        )


class DeadLetters:
    """List, record, retry and discard dead letters."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.collection: AsyncCollection[Document] = db.get_collection(
            COLLECTION, codec_options=CODEC_OPTIONS
        )
        self.checkpoints = Checkpoints(db)

    async def init(self) -> None:
        await self.collection.create_indexes(INDEXES)

    # ---- used by the runner, inside its transactions ------------------------------

    async def record(
        self,
        failure: Failure,
        projection: str,
        policy: str,
        session: AsyncClientSession | None = None,
    ) -> None:
        """Add a dead letter, or count more attempts on the event's existing one."""
        event, now = failure.event, utc_now()
        await self.collection.update_one(
            {"projection": projection, "sequence": event.sequence},
            {
                "$set": {
                    "eventId": event.event_id,
                    "eventType": event.event_type,
                    "aggregateType": event.aggregate_type,
                    "aggregateId": event.aggregate_id,
                    "error": str(failure.error) or repr(failure.error),
                    "errorType": type(failure.error).__qualname__,
                    "traceback": failure.traceback,
                    "lastFailureAt": now,
                    "policy": policy,
                },
                "$inc": {"attempts": failure.attempts},
                "$setOnInsert": {"firstFailureAt": now},
            },
            upsert=True,
            session=session,
        )

    async def resolve(
        self, projection: str, sequences: Iterable[int], session: AsyncClientSession | None = None
    ) -> int:
        """Remove the dead letters of events that have now been applied."""
        wanted = sorted(set(sequences))
        if not wanted:
            return 0
        result = await self.collection.delete_many(
            {"projection": projection, "sequence": {"$in": wanted}}, session=session
        )
        return result.deleted_count

    async def open_sequences(self, projection: str, after: int) -> set[int]:
        """Sequences after `after` that have a dead letter (events a runner will meet again)."""
        cursor = self.collection.find(
            {"projection": projection, "sequence": {"$gt": after}}, {"sequence": 1, "_id": 0}
        )
        return {int(doc["sequence"]) async for doc in cursor}

    # ---- operator API -------------------------------------------------------------

    async def find(
        self, projection: str | None = None, *, limit: int = 100, skip: int = 0
    ) -> list[DeadLetter]:
        """Dead letters, oldest event first."""
        query: Document = {} if projection is None else {"projection": projection}
        cursor = self.collection.find(query).sort([("projection", 1), ("sequence", 1)])
        cursor = cursor.skip(skip).limit(limit)
        return [DeadLetter.from_document(doc) async for doc in cursor]

    async def get(self, projection: str, sequence: int) -> DeadLetter | None:
        doc = await self.collection.find_one({"projection": projection, "sequence": sequence})
        return DeadLetter.from_document(doc) if doc else None

    async def count(self, projection: str | None = None) -> int:
        query: Document = {} if projection is None else {"projection": projection}
        return await self.collection.count_documents(query)

    async def retry(self, store: EventStore, projection: Projection, sequence: int) -> None:
        """Apply the dead letter's event through `projection` again, and remove it.

        Raises DeadLetterError when there is no such dead letter, when the projection has
        not reached the event yet (it will apply it in order), or when the handler fails
        again (the dead letter then counts one more attempt).
        """
        name = projection.name
        letter = await self.get(name, sequence)
        if letter is None:
            raise DeadLetterError(f"no dead letter for {name} at sequence {sequence}")
        checkpoint = await self.checkpoints.get(name)
        position = checkpoint.position if checkpoint else 0
        if position < sequence - 1:
            raise DeadLetterError(
                f"{name} is at {position}: it has not reached sequence {sequence} again and "
                "will apply that event in order"
            )
        event = await _event_at(store, sequence)
        try:
            writes = await projection.apply(event)
        except Exception as exc:
            await self.record(Failure(event, exc, 1), name, str(projection.policy))
            raise DeadLetterError(f"{name}: the handler failed again on {sequence}: {exc}") from exc
        plan = WritePlan()
        plan.extend(writes)

        async def apply(session: AsyncClientSession) -> None:
            await self._remove(session, name, sequence, position)
            await execute(session, self.db, plan)

        await self._in_transaction(apply)

    async def discard(self, projection: str, sequence: int) -> None:
        """Drop a dead letter without applying its event (the read model stays without it)."""
        checkpoint = await self.checkpoints.get(projection)
        position = checkpoint.position if checkpoint else 0

        async def drop(session: AsyncClientSession) -> None:
            await self._remove(session, projection, sequence, position)

        await self._in_transaction(drop)

    async def _remove(
        self, session: AsyncClientSession, projection: str, sequence: int, position: int
    ) -> None:
        result = await self.collection.delete_one(
            {"projection": projection, "sequence": sequence}, session=session
        )
        if result.deleted_count != 1:
            raise DeadLetterError(f"the dead letter {projection}@{sequence} is gone")
        if position == sequence - 1:
            # The projection stopped before this event: move it past, or it would apply
            # (or fail on) the event again.
            moved = await self.checkpoints.move(
                session, projection, expected=position, position=sequence
            )
            if not moved:
                raise DeadLetterError(f"the checkpoint of {projection} moved meanwhile; retry")

    async def _in_transaction(self, fn: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        async with self.db.client.start_session() as session:
            await session.with_transaction(fn)


async def _event_at(store: EventStore, sequence: int) -> RecordedEvent:
    event = await store.event_at(sequence)  # the active log, then the archive
    if event is None:
        raise DeadLetterError(f"no event at sequence {sequence}")
    return event
