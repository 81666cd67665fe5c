"""One transaction for a batch of appends, and what to do when one append breaks it.

The transaction takes a contiguous block of sequence numbers with one `$inc` of the
counter and writes every event of the batch with one `insert_many` (unordered, so every
failing document is reported at once). Before it, the expected versions of all streams in
the batch are checked (esmongo.store.stream_versions); in it, the unique indexes catch what
changed since. A failure that belongs to one append (its stream moved on, its event ids
are taken) takes that append out: the transaction runs again without it, then the append
is told why. A write conflict with another process's transaction (both want the counter)
is retried after a pause about as long as a transaction takes: see
esmongo.store.transactions.backoff.

Archived streams take no event: the transaction checks the batch's streams
(esmongo.store.archive_check); the events' numbers and versions are esmongo.store.numbering's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import BulkWriteError, PyMongoError

from esmongo.codec import Document
from esmongo.errors import (
    AppendConditionFailed,
    ConcurrencyError,
    EventsCollectionSealed,
    StreamArchived,
)
from esmongo.events import RecordedEvent, StreamId, utc_now
from esmongo.metrics import (
    EVENTS_APPENDED,
    STORE_APPENDS,
    STORE_APPENDS_TAKEN_OUT,
    STORE_TRANSACTION_RETRIES,
    STORE_TRANSACTIONS,
)
from esmongo.store.archive import ARCHIVES_FIELD, Archive
from esmongo.store.archive_check import ArchivedInBatch, refuse_archived
from esmongo.store.batch_writes import WritesFailed, write_also, write_inline
from esmongo.store.chain import ChainHead, chain
from esmongo.store.conditions import ConditionRefused, check_conditions
from esmongo.store.fence import Generation, generation, refuse_unless_writable
from esmongo.store.inline import InlineAppliers
from esmongo.store.numbering import number_events
from esmongo.store.pending import PendingAppend, WriteStats
from esmongo.store.retries import Retries
from esmongo.store.stream_versions import StreamVersions
from esmongo.store.transactions import (
    SEQUENCE_COUNTER,
    TRANSACTION_TIMEOUT_S,
    TYPICAL_TRANSACTION_S,
    backoff,
    begin,
    bump_counter,
    commit,
    transient,
)
from esmongo.store.write_errors import (
    culprits,
    validation_failed,
)
from esmongo.store.writers import Writers

PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step ("checked": after a round's version check,
before its transaction; "conditioned": in the transaction, after the appends' conditions
held, before the commit), to make a race with another writer deterministic."""


class _Distrusted(Exception):
    """Raised inside a batch's transaction: the counter's generation moved since the versions
    taken on trust were written (esmongo.store.stream_versions); check them again."""


class BatchWriter:
    """Writes batches of appends into `events`, one transaction per batch."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        events: AsyncCollection[Document],
        counters: AsyncCollection[Document],
        versions: StreamVersions,
        archive: Archive | None = None,
        writers: Writers | None = None,
        counter_id: str = SEQUENCE_COUNTER,
    ) -> None:
        self.client = client
        self.counter_id = counter_id
        """The counter document whose `value` numbers these events (EventStore `sequence`)."""
        self.writers = writers or Writers(events.database)
        """Registers the sessions, so that a dead process's transaction can be killed."""
        self.events = events
        self.counters = counters
        self.versions = versions
        self.archive = archive
        self.retries = Retries(events, archive, versions)
        """What an append taken out of a batch is told, or whether it goes again."""
        self.database = counters.database
        """Where unit-of-work writes go: the main database, with the counters (the events
        may be in a log database of their own, where nothing is ever updated)."""
        self.archives_seen: int | None = None
        """`archives` on the counter as a transaction read it (None: not read yet)."""
        self.stats = WriteStats()
        self.head = ChainHead()
        """The chain's last link this writer committed (esmongo.store.chain)."""
        self._logs = [events] if archive is None else [events, archive.events]
        self.inline = InlineAppliers(counters, counter_id)
        """Projections applied in the transaction while the counter says so (store.inline)."""
        self._transaction_s = TYPICAL_TRANSACTION_S  # moving average of committed ones

    async def flush(self, batch: list[PendingAppend]) -> None:
        """Write one batch, settling each append; those that must try again go round again.

        A failure that no single append owns (an error outside the database's, a document
        the driver cannot encode) fails a lone append; a batch is split so that each append
        runs alone and gets its own outcome.
        """
        pending = batch
        while pending:
            try:
                pending = await self._commit_round(pending)
            except Exception as exc:
                pending = [a for a in pending if not a.future.done()]
                if len(pending) == 1:
                    pending[0].fail(exc)
                for append in pending if len(pending) > 1 else []:
                    await self.flush([append])
                return

    async def _commit_round(self, batch: list[PendingAppend]) -> list[PendingAppend]:
        """Check versions, then commit every append that can, in one transaction.

        An append that breaks the transaction (its stream moved, its event ids exist) is
        taken out and the transaction retried without it; then it is told why, or, when
        the cause is one a retry can get past (an ANY append that lost a race), returned.
        """
        known = self.archives_seen  # before the version check: see _transaction
        live, trusting = await self._check_versions(batch)
        if (hook := PAUSE_POINTS.get("checked")) is not None:
            await hook()
        blamed: list[tuple[PendingAppend, list[Mapping[str, Any]]]] = []
        again: list[PendingAppend] = []
        attempt = 0
        deadline = time.monotonic() + TRANSACTION_TIMEOUT_S
        while live:
            began = time.perf_counter()
            try:
                recorded, written = await self._transaction(live, known, trusting)
            except _Distrusted:
                again.extend(live)  # checked again, by query this time
                break
            except ConditionRefused as exc:
                refusing = live.pop(exc.index)
                if exc.in_batch:  # the earlier append may be taken out: check again, after
                    again.append(refusing)
                else:
                    refusing.fail(AppendConditionFailed(exc.sequence))
                continue
            except EventsCollectionSealed as exc:
                for append in live:
                    append.fail(exc)
                break
            except WritesFailed as exc:
                if not (isinstance(exc.cause, PyMongoError) and transient(exc.cause)):
                    live = [a for a in live if a is not exc.append]
                    self.stats.taken_out += 1
                    STORE_APPENDS_TAKEN_OUT.inc()
                    exc.append.fail(exc.cause)
                    continue
                attempt += 1
                pause = await self._retry_pause(attempt, deadline)
                if pause is None:
                    for append in live:
                        append.fail(exc.cause)
                    break
                await asyncio.sleep(pause)
                continue
            except ArchivedInBatch as exc:
                refused = [a for a in live if any(r.stream in exc.streams for r in a.requests)]
                live = [a for a in live if a not in refused]
                for append in refused:
                    if not await self.retries.settled_before(append, archived=True):
                        stream = next(r.stream for r in append.requests if r.stream in exc.streams)
                        append.fail(StreamArchived(stream))
                continue
            except PyMongoError as exc:
                owned = culprits(exc, live) if isinstance(exc, BulkWriteError) else {}
                if owned:
                    self.stats.taken_out += len(owned)
                    STORE_APPENDS_TAKEN_OUT.inc(len(owned))
                    blamed.extend(owned.items())
                    live = [a for a in live if a not in owned]
                    continue
                attempt += 1
                pause = await self._retry_pause(attempt, deadline) if transient(exc) else None
                if pause is None:
                    failure = self._sealed(exc) or exc
                    for append in live:
                        append.fail(failure)
                    break
                await asyncio.sleep(pause)
                continue
            took = time.perf_counter() - began
            self._transaction_s += (took - self._transaction_s) / 8
            self._succeeded(live, recorded, written)
            break
        for append, errors in blamed:
            if await self.retries.explain(append, errors):
                again.append(append)
        return again

    async def _retry_pause(self, attempt: int, deadline: float) -> float | None:
        """The pause before retrying a transaction that met a write conflict, or None
        when it would end past the deadline. A dead writer may hold what the batch writes
        (the counter): the registry is told, and sweeps after a while."""
        pause = backoff(attempt, self._transaction_s)
        if time.monotonic() + pause > deadline:
            return None
        self.stats.retries += 1
        STORE_TRANSACTION_RETRIES.inc()
        await self.writers.conflicted()
        return pause

    async def _check_versions(
        self, batch: list[PendingAppend]
    ) -> tuple[list[PendingAppend], Generation | None]:
        """Settle the appends whose expectation fails; return the others with their heads,
        and the generation the heads taken on trust need (StreamVersions.check)."""
        requests = [r for append in batch for r in append.requests]
        checked_heads, trusting = await self.versions.check(requests)
        heads = iter(checked_heads)
        live = []
        failed: list[tuple[PendingAppend, ConcurrencyError]] = []
        for append in batch:
            checked = [next(heads) for _ in append.requests]
            conflict = next((h for h in checked if isinstance(h, ConcurrencyError)), None)
            if conflict is None:
                append.heads = [h for h in checked if isinstance(h, int)]
                live.append(append)
            else:
                failed.append((append, conflict))
        # A stream found empty where versions were expected may have been archived.
        empty = [c.stream for _, c in failed if c.actual == 0]
        archived = await self.archive.archived(empty) if self.archive and empty else set()
        for append, conflict in failed:
            gone = conflict.stream in archived
            if not await self.retries.settled_before(append, archived=gone):
                append.fail(StreamArchived(conflict.stream) if gone else conflict)
        return live, trusting

    async def _transaction(
        self,
        batch: list[PendingAppend],
        known: int | None = None,
        trusting: Generation | None = None,
    ) -> tuple[list[list[list[RecordedEvent]]], Generation]:
        """One transaction: a block of sequence numbers from the counter, one insert_many.
        Returns the events and the counter's generation they were written at.

        `known` is the number of archives as read before the version check. If the counter
        still says so, only streams found empty can be archived ones; otherwise any can.
        `trusting`: the generation that heads taken on trust need (_Distrusted otherwise).
        """
        total = sum(append.count for append in batch)
        async with self.writers.session() as session:
            await begin(session)
            try:
                counter = await bump_counter(
                    self.counters, "value", total, session, self.counter_id
                )
                refuse_unless_writable(counter, self.events.name)
                written = generation(counter)
                self.versions.generation = written
                if trusting is not None and trusting != written:
                    raise _Distrusted()
                if self.archive is not None:
                    self.archives_seen = archives = int(counter.get(ARCHIVES_FIELD, 0))
                    await refuse_archived(self.archive, batch, known, archives, session)
                sequence = int(counter["value"])  # the block's last number
                first = sequence - total
                recorded = number_events(batch, first, utc_now())
                docs = [e.to_document() for streams in recorded for s in streams for e in s]
                previous = await self.head.before(first, self._logs, session, written)
                last = chain(previous, docs)
                await self.events.insert_many(docs, ordered=False, session=session)
                for append, streams in zip(batch, recorded, strict=True):
                    if append.writes is not None:
                        await write_also(self.database, append, streams, session)
                firsts = [streams[0][0].sequence for streams in recorded]
                conditions = [(a.condition, f) for a, f in zip(batch, firsts, strict=True)]
                await check_conditions(conditions, first + 1, self.events, session)
                if (hook := PAUSE_POINTS.get("conditioned")) is not None:
                    await hook()
                applied = await write_inline(self.inline, batch, recorded, counter, first, session)
            except Exception:
                if session.in_transaction:
                    await session.abort_transaction()
                raise
            await commit(session)
        self.head.committed(sequence, last, written)
        self.inline.committed(applied, sequence)
        return recorded, written

    def _succeeded(
        self,
        batch: list[PendingAppend],
        recorded: list[list[list[RecordedEvent]]],
        written: Generation,
    ) -> None:
        self.stats.transactions += 1
        STORE_TRANSACTIONS.inc()
        STORE_APPENDS.inc(len(batch))
        for append, streams in zip(batch, recorded, strict=True):
            for events in streams:
                last = events[-1]
                self.versions.remember(
                    StreamId(last.aggregate_type, last.aggregate_id),
                    last.aggregate_version,
                    last.sequence,
                    written,
                )
            EVENTS_APPENDED.inc(append.count)
            self.stats.appends += 1
            self.stats.events += append.count
            append.succeed(streams)

    def _sealed(self, exc: PyMongoError) -> EventsCollectionSealed | None:
        """Events are never refused by a validator, except when a migration sealed them."""
        if not validation_failed(exc):
            return None
        return EventsCollectionSealed(
            f"the events collection {self.events.name} refuses writes: a migration switched "
            "the store to another collection. Restart this process so that it opens the "
            "active one (esmongo migrate status)"
        )
