"""Transactions on the sequence counter, as appends and archives run them.

Both increment a field of the one counter document first, so any two of them conflict and
are serialized (ADR 0001, ADR 0006); a conflict is retried after about as long as a
transaction takes (`backoff`), and a commit whose outcome is unknown is sent again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from pymongo import ReadPreference, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from esmongo.backoff import jittered
from esmongo.codec import Document

T = TypeVar("T")

SEQUENCE_COUNTER = "event_sequence"
DURABLE = WriteConcern("majority", j=True)

TRANSACTION_TIMEOUT_S = 120.0
"""How long a batch keeps retrying transient failures (PyMongo's with_transaction: 120 s)."""
BACKOFF_MAX_S = 1.0
TYPICAL_TRANSACTION_S = 0.005
"""What a transaction is assumed to take until this writer has timed some of its own."""
COMMIT_ATTEMPTS = 3
WRITE_CONFLICT = 112


async def begin(session: AsyncClientSession) -> None:
    """Start a transaction: snapshot reads, majority and journaled writes, on the primary."""
    await session.start_transaction(
        read_concern=ReadConcern("snapshot"),
        write_concern=DURABLE,
        read_preference=ReadPreference.PRIMARY,
    )


INCARNATION = "incarnation"
"""Field of a counter document: a random id given when the document is created, so that a
counter made again (its database dropped and written anew) is not the one a process trusted
its heads by, though every count on it starts from zero again (esmongo.store.fence)."""


def incarnation() -> Document:
    """For `$setOnInsert` wherever a counter document may be created."""
    return {INCARNATION: uuid.uuid4().hex}


async def bump_counter(
    counters: AsyncCollection[Document],
    field: str,
    amount: int,
    session: AsyncClientSession,
    counter_id: str = SEQUENCE_COUNTER,
) -> Document:
    """Increment `field` of the sequence counter `counter_id` in the transaction; the
    document after."""
    counter = await counters.find_one_and_update(
        {"_id": counter_id},
        {"$inc": {field: amount}, "$setOnInsert": incarnation()},
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    assert counter is not None
    return counter


def transient(exc: PyMongoError) -> bool:
    """A failure that running the same transaction again can get past."""
    if exc.has_error_label("TransientTransactionError"):
        return True
    if isinstance(exc, BulkWriteError):
        errors = (exc.details or {}).get("writeErrors") or []
        return any(e.get("code") == WRITE_CONFLICT for e in errors)
    return False


def backoff(attempt: int, typical: float) -> float:
    """How long to wait before retrying a transaction that hit a write conflict.

    The conflict is on the counter (or the sequence numbers), held by another process's
    transaction until it commits: retrying sooner only adds work to the server and fails
    again. So wait about as long as a transaction takes here, with full jitter so that
    several waiting processes do not retry in step, doubling on each further conflict.
    """
    return jittered(attempt, typical, BACKOFF_MAX_S)


async def commit(session: AsyncClientSession) -> None:
    """Commit, retrying when the outcome is unknown (commitTransaction is idempotent)."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if attempt == COMMIT_ATTEMPTS or not exc.has_error_label(
                "UnknownTransactionCommitResult"
            ):
                raise


async def run_in_transaction(
    client: AsyncMongoClient[Document],
    body: Callable[[AsyncClientSession], Awaitable[T]],
    *,
    typical: float = TYPICAL_TRANSACTION_S * 4,
    session: Callable[[], AbstractAsyncContextManager[AsyncClientSession]] | None = None,
    on_conflict: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `body` in a transaction and commit, retrying transient failures (write conflicts
    on the counter) with `backoff` for up to TRANSACTION_TIMEOUT_S. Any other error aborts
    and is raised; `body` may also abort and return early. `session` opens the session
    (a registered writer's, esmongo.store.writers); `on_conflict` is told of each retry."""
    deadline = time.monotonic() + TRANSACTION_TIMEOUT_S
    attempt = 0
    while True:
        try:
            async with (session or client.start_session)() as opened:
                await begin(opened)
                try:
                    result = await body(opened)
                except BaseException:
                    if opened.in_transaction:
                        await opened.abort_transaction()
                    raise
                if opened.in_transaction:
                    await commit(opened)
                return result
        except PyMongoError as exc:
            attempt += 1
            pause = backoff(attempt, typical)
            if not transient(exc) or time.monotonic() + pause > deadline:
                raise
            if on_conflict is not None:
                await on_conflict()
            await asyncio.sleep(pause)
