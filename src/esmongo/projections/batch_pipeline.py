"""A projection's batch pipeline: read a batch, run the handlers, commit it with the checkpoint.

Every batch, catch-up or live, is read the same way: events after the checkpoint, by
sequence, in the order they were committed (EventSource). Since the global sequence is
gap-free and commit-ordered, a read that sees sequence N has seen every event below N:
nothing is missed, nothing is read twice.

Each handler is retried with backoff; one that keeps failing leaves a dead letter (and, by
the STOP policy, blocks the projection before its event): esmongo.projections.handling.
The handlers' writes are merged (esmongo.projections.writes), and the batch's writes, its
dead letters and its checkpoint commit in one transaction (CommitGroup), the checkpoint by
compare-and-set on (fence, position): a process that dies anywhere leaves either the whole
batch or none of it; a runner that lost its lease fails the compare-and-set and its batch
aborts.

The lease that makes this runner the only writer is the subclass's (esmongo.projections.runner).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from esmongo.codec import CODEC_OPTIONS
from esmongo.events import RecordedEvent, utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.commit_group import CommitGroup
from esmongo.projections.dead_letters import DeadLetters, Failure
from esmongo.projections.errors import CheckpointConflict, LeaseLost
from esmongo.projections.fresh import FreshCollections
from esmongo.projections.handling import HandledBatch, handle_batch
from esmongo.projections.options import BatchReport, RunnerOptions, default_owner
from esmongo.projections.projection import FailurePolicy, Projection
from esmongo.projections.runner_metrics import RunnerMetrics
from esmongo.projections.source import Backlog, EventSource, SharedSource, StoreSource
from esmongo.projections.swap import collection_exists
from esmongo.projections.writes import execute
from esmongo.store import EventStore

log = logging.getLogger(__name__)

TOO_LARGE = frozenset({251, 290, 313})
"""NoSuchTransaction (what a transaction the server aborted at its lifetime limit answers),
TransactionExceededLifetimeLimitSeconds, TransactionTooLargeForCache: a catch-up batch
whose transaction fails so is split (esmongo.projections.options.RunnerOptions)."""


class RunnerState(StrEnum):
    IDLE = "idle"
    STANDBY = "standby"
    """Another process holds the lease; this runner takes over when it expires."""
    CATCHING_UP = "catching_up"
    LIVE = "live"
    BLOCKED = "blocked"
    """Stopped before a dead letter by the STOP policy; resumes once it is retried or discarded."""
    INLINE = "inline"
    """Handed over to the append transactions (esmongo.projections.inline): only watches."""
    STOPPED = "stopped"


class CheckpointMoved(Exception):
    """The checkpoint was moved by someone else (a retry, a discard); the fence is still ours."""


class BatchPipeline(abc.ABC):
    """Applies one projection's batches and moves its checkpoint, under a fence it is given.

    The subclass holds the lease: it sets `_fence`, says whether the lease still holds
    (`_holds_lease`) and gives the session the transactions run in (`session`).
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        options: RunnerOptions,
        *,
        source: EventSource | None,
        checkpoint_name: str | None,
        targets: Mapping[str, str] | None,
        group: CommitGroup | None,
    ) -> None:
        self.store = store
        self.db = store.db.with_options(codec_options=CODEC_OPTIONS)
        self.projection = projection
        self.options = options
        self.name = checkpoint_name or projection.name
        self.owner = options.owner or default_owner()
        self.source: EventSource = source if source is not None else StoreSource(store)
        self.targets = dict(targets or {})
        self.group = group or CommitGroup()
        """Commits this runner's batches, with those of the daemon's other runners."""
        self.checkpoints = Checkpoints(self.db)
        self.dead_letters = DeadLetters(self.db)
        self.state = RunnerState.IDLE
        self.position = 0
        self.head = 0
        self.events_applied = 0
        self.blocked_at: int | None = None
        self._fence = 0
        self._open_dead: set[int] = set()
        self._advanced = asyncio.Event()
        self._fresh: FreshCollections | None = None
        """Set while catching up from zero into empty collections (writes.FreshCollections)."""
        self.catch_up_size = options.catch_up_size
        """Events per catch-up batch: the option, halved by each transaction refused as
        too large or too long (TOO_LARGE)."""
        self.metrics = RunnerMetrics(self.name)
        self._event_types = list(projection.event_types)
        if isinstance(self.source, SharedSource):
            self.source.register(self._event_types)

    @abc.abstractmethod
    def _holds_lease(self) -> bool:
        """True while this runner's lease is valid: a batch commits only then."""

    @abc.abstractmethod
    def session(self) -> AsyncClientSession:
        """The session of this runner's transactions, which its lease records."""

    async def init(self, *, only: Callable[[IndexModel], bool] | None = None) -> None:
        """Create the read-model collections (with their indexes) and dead-letter indexes.

        `only`: create just the indexes it accepts (a rebuild builds the others after
        filling its collections, esmongo.projections.rebuild).
        """
        await self.dead_letters.init()
        for name, indexes in self.projection.collections.items():
            target = self.targets.get(name, name)
            if not await collection_exists(self.db, target):
                with contextlib.suppress(PyMongoError):  # created meanwhile elsewhere
                    await self.db.create_collection(target)
            wanted = [i for i in indexes if only is None or only(i)]
            if wanted:
                await self.db[target].create_indexes(wanted)

    def _step(self, point: str) -> None:
        if self.options.step_hook is not None:
            self.options.step_hook(point)

    async def _resume_at(self, position: int, blocked_at: int | None) -> None:
        """Go on from a checkpoint this runner did not write (a takeover, a retry)."""
        self.position = position
        self.blocked_at = blocked_at
        self._open_dead = await self.dead_letters.open_sequences(self.name, position)
        fresh = position == 0 and await self._empty()
        self._fresh = FreshCollections(self.projection.collections) if fresh else None

    async def _empty(self) -> bool:
        """Whether every collection this runner writes is empty (it holds the lease)."""
        for name in self.projection.collections:
            target = self.targets.get(name, name)
            if await self.db[target].find_one({}, projection={"_id": 1}) is not None:
                return False
        return True

    # ---- one batch --------------------------------------------------------------

    async def step(self) -> bool:
        """Read and apply one batch. True when more events are waiting right now."""
        with self.group.stepping(self):
            return await self._step_batch()

    async def _step_batch(self) -> bool:
        if self.state == RunnerState.INLINE:
            return False  # the appends apply it: a batch here would apply events twice
        started = time.perf_counter()
        window = await self.source.read(
            self.position,
            self.options.batch_size,
            self._event_types,
            Backlog(self.catch_up_size, self.options.catch_up_max_bytes),
        )
        head, events, target = window.head, window.events, window.complete
        self.head = max(self.head, head)
        if target <= self.position:
            self.metrics.lag(max(0, head - self.position), 0.0)
            return False
        self._step("read")
        live = self.state == RunnerState.LIVE
        if not live:
            self.state = RunnerState.CATCHING_UP
        else:
            self._fresh = None  # live batches merge per document
        batch = await self._handle_batch(events, target)
        try:
            operations = await self._commit(batch)
        except BulkWriteError as exc:
            log.warning(
                "projection %s: a write of the batch after %d failed (%s); applying its "
                "events one at a time to find it",
                self.name,
                self.position,
                exc,
            )
            operations = await self._apply_singly(events, target)
        except OperationFailure as exc:
            span = target - self.position
            if exc.code not in TOO_LARGE or span <= self.options.batch_size:
                raise
            self.catch_up_size = max(self.options.batch_size, span // 2)
            log.warning(
                "projection %s: the transaction of the %d sequences after %d failed (%s); "
                "catching up %d a batch from now on",
                self.name,
                span,
                self.position,
                exc,
                self.catch_up_size,
            )
            return True  # nothing committed: read again, fewer events
        duration = time.perf_counter() - started
        await self._after_commit(batch, operations, head, duration, live)
        return target < head and self.blocked_at is None

    async def _handle_batch(self, events: list[RecordedEvent], target: int) -> HandledBatch:
        return await handle_batch(self.projection, self.name, events, target, self._open_dead)

    async def _commit(self, batch: HandledBatch) -> int:
        """The batch's transaction (shared with other projections of the daemon when they
        have a batch ready too). Returns the number of write operations sent."""
        if not self._holds_lease():
            raise LeaseLost(f"the lease of {self.name} was lost before commit")
        expected = self.position

        advance = self.checkpoints.advance(
            self.name,
            fence=self._fence,
            expected=expected,
            position=batch.target,
            blocked_at=batch.blocked_at,
            stats=self._stats(len(batch.events)),
        )

        async def write(session: AsyncClientSession) -> int:
            """What the batch writes after its checkpoint moved (by the group)."""
            self._step("checkpoint")
            sent = await execute(session, self.db, batch.plan, self.targets, self._fresh)
            self._step("writes")
            for failure in batch.failures:
                await self.dead_letters.record(
                    failure, self.name, str(self.projection.policy), session
                )
            await self.dead_letters.resolve(self.name, batch.resolved, session)
            self._step("before_commit")
            return sent

        try:
            sent = await self.group.commit(self, advance, write)
        except CheckpointConflict:
            await self._reload_after_conflict()
            raise
        self._step("committed")
        self.position = batch.target
        self.blocked_at = batch.blocked_at
        self._open_dead.difference_update(batch.resolved)
        self._open_dead.update(f.event.sequence for f in batch.failures)
        return sent

    async def _reload_after_conflict(self) -> None:
        """After a failed compare-and-set: go on from the new position if still fenced in."""
        checkpoint = await self.checkpoints.get(self.name)
        if checkpoint is not None and checkpoint.fence == self._fence:
            log.info(
                "projection %s: checkpoint moved from %d to %d by someone else; going on",
                self.name,
                self.position,
                checkpoint.position,
            )
            await self._resume_at(checkpoint.position, checkpoint.blocked_at)
            raise CheckpointMoved

    async def _apply_singly(self, events: list[RecordedEvent], target: int) -> int:
        """Apply a batch whose bulk write failed one event at a time, isolating the culprit."""
        sent = 0
        for index, event in enumerate(events):
            last = index == len(events) - 1
            event_target = target if last else event.sequence
            attempts = max(1, self.projection.max_attempts)
            pause = self.projection.retry_backoff_s
            for attempt in range(1, attempts + 1):
                batch = await self._handle_batch([event], event_target)
                try:
                    sent += await self._commit(batch)
                    break
                except BulkWriteError as exc:
                    if attempt < attempts:
                        await asyncio.sleep(pause)
                        pause *= 2
                        continue
                    failed = HandledBatch(events=[event], target=event_target)
                    failed.failures.append(Failure(event, exc, attempt))
                    if self.projection.policy == FailurePolicy.STOP:
                        failed.target, failed.blocked_at = event.sequence - 1, event.sequence
                    await self._commit(failed)
            if self.blocked_at is not None:
                break
        return sent

    async def _after_commit(
        self, batch: HandledBatch, operations: int, head: int, duration: float, live: bool
    ) -> None:
        now = time.time()
        self.events_applied += len(batch.events)
        self.metrics.batch(batch.events, duration, live=live, now=now)
        if batch.failures or batch.resolved:
            await self._count_dead_letters()
        lag = max(0, head - self.position)
        oldest = batch.events[-1].timestamp.timestamp() if batch.events and lag else now
        self.metrics.lag(lag, max(0.0, now - oldest) if lag else 0.0)
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()
        if self.options.on_batch is not None:
            self.options.on_batch(
                BatchReport(
                    projection=self.name,
                    events=batch.events,
                    position=self.position,
                    head=head,
                    duration_s=duration,
                    committed_at=now,
                    operations=operations,
                    dead_letters=len(batch.failures),
                )
            )

    async def _count_dead_letters(self) -> None:
        try:
            count = await self.dead_letters.count(self.name)
        except PyMongoError:
            return
        self.metrics.dead_letters(count)

    def _stats(self, count: int) -> dict[str, Any]:
        return {
            "eventsPerSecond": round(self.events_per_second, 1),
            "lastBatchSize": count,
            "owner": self.owner,
            "at": utc_now(),
        }

    @property
    def events_per_second(self) -> float:
        return self.metrics.events_per_second
