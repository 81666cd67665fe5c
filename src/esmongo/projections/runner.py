"""The projection runner: catch-up by sequence, then live on change-stream wake-ups.

Every batch, catch-up or live, is read the same way: events after the checkpoint, by
sequence, in the order they were committed. The change stream only says "look now".
Since the global sequence is gap-free and commit-ordered, a read that sees sequence N has
seen every event below N: nothing is missed at the hand-over, nothing is read twice.

A batch's merged read-model writes, its dead letters and its checkpoint commit in one
transaction, the checkpoint by compare-and-set on (fence, position). A process that dies
anywhere leaves either the whole batch or none of it; a runner that lost its lease fails
the compare-and-set and its batch aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, PyMongoError

from esmongo.codec import CODEC_OPTIONS
from esmongo.events import RecordedEvent, utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.commit_group import CommitGroup
from esmongo.projections.dead_letters import DeadLetters, Failure
from esmongo.projections.errors import (
    CheckpointConflict,
    CommitInterrupted,
    LeaseLost,
    ProjectionBlocked,
)
from esmongo.projections.leases import HeldLease, Leases
from esmongo.projections.projection import FailurePolicy, Projection
from esmongo.projections.runner_metrics import RunnerMetrics
from esmongo.projections.source import EventSource, SharedSource, StoreSource
from esmongo.projections.swap import collection_exists, finish_swap
from esmongo.projections.watcher import EventWatcher
from esmongo.projections.writes import WritePlan, execute
from esmongo.store import EventStore

log = logging.getLogger(__name__)


class RunnerState(StrEnum):
    IDLE = "idle"
    STANDBY = "standby"
    """Another process holds the lease; this runner takes over when it expires."""
    CATCHING_UP = "catching_up"
    LIVE = "live"
    BLOCKED = "blocked"
    """Stopped before a dead letter by the STOP policy; resumes once it is retried or discarded."""
    STOPPED = "stopped"


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did (for hooks and benchmarks)."""

    projection: str
    events: Sequence[RecordedEvent]
    position: int
    head: int
    duration_s: float
    committed_at: float
    """time.time() right after the commit."""
    operations: int
    dead_letters: int


@dataclass
class _Batch:
    events: list[RecordedEvent]
    target: int
    plan: WritePlan = field(default_factory=WritePlan)
    failures: list[Failure] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    blocked_at: int | None = None


class _Moved(Exception):
    """The checkpoint was moved by someone else (a retry, a discard); the fence is still ours."""


class _HandlerFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


def default_owner() -> str:
    """host:pid:random: unique among live processes, readable in the lease document."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


StepHook = Callable[[str], None]


class ProjectionRunner:
    """Runs one projection: holds its lease, applies batches, moves its checkpoint."""

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        owner: str | None = None,
        batch_size: int = 500,
        catch_up_batch_size: int | None = None,
        lease_ttl_s: float = 10.0,
        idle_poll_s: float = 1.0,
        standby_poll_s: float | None = None,
        watcher: EventWatcher | None = None,
        source: EventSource | None = None,
        checkpoint_name: str | None = None,
        targets: Mapping[str, str] | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        step_hook: StepHook | None = None,
        group: CommitGroup | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.store = store
        self.db = store.db.with_options(codec_options=CODEC_OPTIONS)
        self.projection = projection
        self.name = checkpoint_name or projection.name
        self.owner = owner or default_owner()
        self.batch_size = batch_size
        self.catch_up_batch_size = max(batch_size, catch_up_batch_size or 10 * batch_size)
        """Used while more than a batch behind: fewer, larger transactions (and merges)."""
        self.lease_ttl_s = lease_ttl_s
        self.idle_poll_s = idle_poll_s
        self.standby_poll_s = standby_poll_s if standby_poll_s is not None else lease_ttl_s / 4
        self.watcher = watcher
        self.source: EventSource = source if source is not None else StoreSource(store)
        self.targets = dict(targets or {})
        self.on_batch = on_batch
        self.step_hook = step_hook
        self.group = group or CommitGroup()
        """Commits this runner's batches, with those of the daemon's other runners."""
        self.checkpoints = Checkpoints(self.db)
        self.leases = Leases(self.db)
        self.dead_letters = DeadLetters(self.db)
        self.state = RunnerState.IDLE
        self.position = 0
        self.head = 0
        self.events_applied = 0
        self.blocked_at: int | None = None
        self._lease: HeldLease | None = None
        self._session: AsyncClientSession | None = None
        """The session of this runner's batch transactions (recorded in its lease)."""
        self._fence = 0
        self._open_dead: set[int] = set()
        self._wake = asyncio.Event()
        self._advanced = asyncio.Event()
        self.metrics = RunnerMetrics(self.name)
        self._event_types = list(projection.event_types)
        if watcher is not None:
            watcher.subscribe(self._event_types, self._wake)
        if isinstance(self.source, SharedSource):
            self.source.register(self._event_types)

    # ---- setup ------------------------------------------------------------------

    async def init(self) -> None:
        """Create the read-model collections (with their indexes) and dead-letter indexes."""
        await self.dead_letters.init()
        for name, indexes in self.projection.collections.items():
            target = self.targets.get(name, name)
            if not await collection_exists(self.db, target):
                with contextlib.suppress(PyMongoError):  # created meanwhile elsewhere
                    await self.db.create_collection(target)
            if indexes:
                await self.db[target].create_indexes(list(indexes))

    def _step(self, point: str) -> None:
        if self.step_hook is not None:
            self.step_hook(point)

    # ---- the loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: take the lease (or stand by), catch up, go live.

        On stop the current batch is finished (or abandoned: never half-written) and the
        lease released, so a standby takes over at once.
        """
        stopper = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                try:
                    lease = await self._acquire()
                except PyMongoError as exc:
                    log.warning("projection %s: cannot reach the lease (%s)", self.name, exc)
                    await self._pause(stop, self.standby_poll_s)
                    continue
                if lease is None:
                    self.state = RunnerState.STANDBY
                    await self._pause(stop, self.standby_poll_s)
                    continue
                try:
                    await self._serve(lease, stop)
                except (LeaseLost, CheckpointConflict, CommitInterrupted) as exc:
                    log.warning("projection %s: %s; standing by", self.name, exc)
                except PyMongoError as exc:
                    log.warning("projection %s: database error (%s); retrying", self.name, exc)
                    await self._pause(stop, min(1.0, self.standby_poll_s))
                finally:
                    await self._drop_lease(release=stop.is_set())
        finally:
            stopper.cancel()
            self.state = RunnerState.STOPPED

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _acquire(self) -> HeldLease | None:
        if self._lease is not None and self._lease.valid:
            return self._lease
        checkpoint = await self.checkpoints.get(self.name)
        floor = checkpoint.fence if checkpoint else 0
        if self._session is None:
            self._session = self.db.client.start_session()
            # Give the session its server id now, so the lease can record it.
            await self.checkpoints.collection.find_one({"_id": self.name}, session=self._session)
        version = await self.leases.acquire(
            self.name,
            self.owner,
            self.lease_ttl_s,
            min_version=floor,
            session_id=self._session.session_id,
        )
        if version is None:
            return None
        lease = HeldLease(self.leases, self.name, self.owner, version, self.lease_ttl_s)
        lease.on_lost = self._wake.set
        lease.start()
        self._lease = lease
        self.metrics.lease_held(True)
        try:
            await self._take_checkpoint(version)
        except BaseException:
            await self._drop_lease(release=True)
            raise
        log.info(
            "projection %s: lease %d taken by %s at position %d",
            self.name,
            version,
            self.owner,
            self.position,
        )
        return lease

    async def _take_checkpoint(self, fence: int) -> None:
        checkpoint = await self.checkpoints.raise_fence(self.name, fence)
        self._fence = fence
        if checkpoint.pending_swap:
            await finish_swap(self.db, self.name, fence)
            checkpoint = await self.checkpoints.raise_fence(self.name, fence)
        self.position = checkpoint.position
        # A STOP block is not kept across a restart or takeover: the new holder tries the
        # blocking event again (its dead letter is open), and either applies it, removing
        # the dead letter in the batch's transaction, or blocks there again.
        self.blocked_at = None
        self._open_dead = await self.dead_letters.open_sequences(self.name, self.position)
        if checkpoint.blocked_at is not None:
            log.info(
                "projection %s: retrying the event %d it was blocked at",
                self.name,
                checkpoint.blocked_at,
            )

    async def release(self) -> None:
        """Release the lease if this runner holds it (after `catch_up(release=False)`)."""
        await self._drop_lease(release=True)

    async def _drop_lease(self, *, release: bool) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.stop(release=release)
            self.metrics.lease_held(False)
        session, self._session = self._session, None
        if session is not None:
            await session.end_session()

    async def _serve(self, lease: HeldLease, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not lease.valid:
                raise LeaseLost(f"the lease of {self.name} expired or was taken over")
            self._wake.clear()
            if self.blocked_at is not None:
                self.state = RunnerState.BLOCKED
                await self._check_unblocked()
            else:
                try:
                    more = await self.step()
                except _Moved:
                    continue
                if more:
                    continue
                self.state = RunnerState.LIVE if self.blocked_at is None else RunnerState.BLOCKED
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)

    async def _check_unblocked(self) -> None:
        checkpoint = await self.checkpoints.get(self.name)
        if checkpoint is None or checkpoint.fence != self._fence:
            raise LeaseLost(f"the checkpoint of {self.name} was fenced by another runner")
        if checkpoint.position != self.position or checkpoint.blocked_at is None:
            log.info("projection %s: unblocked at position %d", self.name, checkpoint.position)
            self.position = checkpoint.position
            self.blocked_at = None
            self._open_dead = await self.dead_letters.open_sequences(self.name, self.position)

    # ---- one batch --------------------------------------------------------------

    async def step(self) -> bool:
        """Read and apply one batch. True when more events are waiting right now."""
        with self.group.stepping(self):
            return await self._step_batch()

    async def _step_batch(self) -> bool:
        started = time.perf_counter()
        behind = self.head - self.position > self.batch_size
        limit = self.catch_up_batch_size if behind else self.batch_size
        window = await self.source.read(self.position, limit, self._event_types)
        head, events, target = window.head, window.events, window.complete
        self.head = max(self.head, head)
        if target <= self.position:
            self.metrics.lag(max(0, head - self.position), 0.0)
            return False
        self._step("read")
        live = self.state == RunnerState.LIVE
        if not live:
            self.state = RunnerState.CATCHING_UP
        batch = await self._prepare(events, target)
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
        duration = time.perf_counter() - started
        await self._after_commit(batch, operations, head, duration, live)
        return target < head and self.blocked_at is None

    async def _prepare(self, events: list[RecordedEvent], target: int) -> _Batch:
        batch = _Batch(events=[], target=target)
        for event in events:
            try:
                writes = await self._handle(event)
            except _HandlerFailed as failed:
                batch.failures.append(failed.failure)
                if self.projection.policy == FailurePolicy.STOP:
                    batch.target = event.sequence - 1
                    batch.blocked_at = event.sequence
                    break
                batch.events.append(event)
                continue
            batch.plan.extend(writes)
            batch.events.append(event)
            if event.sequence in self._open_dead:
                batch.resolved.append(event.sequence)
        return batch

    async def _handle(self, event: RecordedEvent) -> list[Any]:
        projection = self.projection
        pause = projection.retry_backoff_s
        attempts = max(1, projection.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await projection.apply(event)
            except Exception as exc:
                if attempt == attempts:
                    log.error(
                        "projection %s: handler failed %d times on %s #%d (%s)",
                        self.name,
                        attempt,
                        event.event_type,
                        event.sequence,
                        exc,
                    )
                    raise _HandlerFailed(Failure(event, exc, attempt)) from exc
                log.warning(
                    "projection %s: handler failed on #%d (attempt %d/%d): %s",
                    self.name,
                    event.sequence,
                    attempt,
                    attempts,
                    exc,
                )
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")

    def session(self) -> AsyncClientSession:
        """The session of this runner's transactions, which its lease records."""
        if self._session is None:
            raise LeaseLost(f"the lease of {self.name} was lost before commit")
        return self._session

    async def _commit(self, batch: _Batch) -> int:
        """The batch's transaction (shared with other projections of the daemon when they
        have a batch ready too). Returns the number of write operations sent."""
        lease = self._lease
        if lease is None or not lease.valid:
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
            sent = await execute(session, self.db, batch.plan, self.targets)
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
            self.position = checkpoint.position
            self.blocked_at = checkpoint.blocked_at
            self._open_dead = await self.dead_letters.open_sequences(self.name, self.position)
            raise _Moved

    async def _apply_singly(self, events: list[RecordedEvent], target: int) -> int:
        """Apply a batch whose bulk write failed one event at a time, isolating the culprit."""
        sent = 0
        for index, event in enumerate(events):
            last = index == len(events) - 1
            event_target = target if last else event.sequence
            attempts = max(1, self.projection.max_attempts)
            pause = self.projection.retry_backoff_s
            for attempt in range(1, attempts + 1):
                batch = await self._prepare([event], event_target)
                try:
                    sent += await self._commit(batch)
                    break
                except BulkWriteError as exc:
                    if attempt < attempts:
                        await asyncio.sleep(pause)
                        pause *= 2
                        continue
                    failed = _Batch(events=[event], target=event_target)
                    failed.failures.append(Failure(event, exc, attempt))
                    if self.projection.policy == FailurePolicy.STOP:
                        failed.target, failed.blocked_at = event.sequence - 1, event.sequence
                    await self._commit(failed)
            if self.blocked_at is not None:
                break
        return sent

    async def _after_commit(
        self, batch: _Batch, operations: int, head: int, duration: float, live: bool
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
        if self.on_batch is not None:
            self.on_batch(
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

    # ---- for callers --------------------------------------------------------------

    async def wait_until(self, sequence: int, timeout_s: float = 10.0) -> int:
        """Wait until this projection has applied `sequence` (read-your-writes).

        Follows this runner when it holds the lease, the stored checkpoint otherwise.
        """
        deadline = time.monotonic() + timeout_s
        while self.position < sequence:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"projection {self.name} is at {self.position}, not {sequence}, "
                    f"after {timeout_s}s"
                )
            if self._lease is None:
                return await self.checkpoints.wait_until(self.name, sequence, left)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), min(left, 0.1))
        return self.position

    async def catch_up(
        self,
        progress: Callable[[int, int], Awaitable[None] | None] | None = None,
        *,
        release: bool = True,
    ) -> int:
        """Take the lease, apply batches until the head (re-read each batch) is reached.

        For rebuilds, replays and tests. Raises LeaseLost when another process holds the
        lease, ProjectionBlocked when a STOP-policy dead letter stops it.
        """
        lease = await self._acquire()
        if lease is None:
            raise LeaseLost(f"the lease of {self.name} is held by another process")
        try:
            while True:
                if self.blocked_at is not None:
                    raise ProjectionBlocked(
                        f"projection {self.name} is blocked by the dead letter at "
                        f"{self.blocked_at}; retry or discard it"
                    )
                try:
                    more = await self.step()
                except _Moved:
                    continue
                if progress is not None:
                    result = progress(self.position, self.head)
                    if result is not None:
                        await result
                if not more and self.position >= self.head:
                    return self.position
        finally:
            if release:
                await self._drop_lease(release=True)
