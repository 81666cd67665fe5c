"""The projection runner's lease loop: one runner per projection applies its batches.

A runner takes the projection's lease (or stands by until it expires), raises the fence on
the checkpoint so a former holder's batches abort, catches up and goes live, woken by the
daemon's change stream (EventWatcher). It renews the lease in the background; a lease lost
to expiry or takeover stops the batches and sends it back to standby. A projection blocked
by a STOP dead letter waits until the letter is retried or discarded; a new holder tries
the blocking event again. The batches themselves are esmongo.projections.batch_pipeline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from esmongo.projections.batch_pipeline import BatchPipeline, CheckpointMoved, RunnerState
from esmongo.projections.commit_group import CommitGroup
from esmongo.projections.errors import (
    CheckpointConflict,
    CommitInterrupted,
    LeaseLost,
    ProjectionBlocked,
)
from esmongo.projections.inline import hand_over, take_back
from esmongo.projections.leases import HeldLease, Leases
from esmongo.projections.options import RunnerOptions
from esmongo.projections.projection import Lifecycle, Projection
from esmongo.projections.source import EventSource
from esmongo.projections.swap import finish_swap
from esmongo.projections.watcher import EventWatcher
from esmongo.store import EventStore

log = logging.getLogger(__name__)


class ProjectionRunner(BatchPipeline):
    """Runs one projection: holds its lease, applies batches, moves its checkpoint.

    `watcher`, `source` and `group` are what a daemon's runners share; `checkpoint_name`
    and `targets` let a rebuild run a projection into other collections beside the live one.
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        options: RunnerOptions | None = None,
        *,
        watcher: EventWatcher | None = None,
        source: EventSource | None = None,
        checkpoint_name: str | None = None,
        targets: Mapping[str, str] | None = None,
        group: CommitGroup | None = None,
    ) -> None:
        super().__init__(
            store,
            projection,
            options or RunnerOptions(),
            source=source,
            checkpoint_name=checkpoint_name,
            targets=targets,
            group=group,
        )
        self.watcher = watcher
        self.leases = Leases(self.db)
        self._lease: HeldLease | None = None
        self._session: AsyncClientSession | None = None
        """The session of this runner's batch transactions (recorded in its lease)."""
        self._wake = asyncio.Event()
        self.inline_wanted = (
            projection.lifecycle == Lifecycle.INLINE
            and self.name == projection.name
            and not targets
        )
        """Hand the projection over to the appends once caught up (not for a rebuild's)."""
        if watcher is not None:
            watcher.subscribe(self._event_types, self._wake)

    def _holds_lease(self) -> bool:
        return self._lease is not None and self._lease.valid

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
                    await self._pause(stop, self.options.standby_poll)
                    continue
                if lease is None:
                    self.state = RunnerState.STANDBY
                    await self._pause(stop, self.options.standby_poll)
                    continue
                try:
                    await self._serve(lease, stop)
                except (LeaseLost, CheckpointConflict, CommitInterrupted) as exc:
                    log.warning("projection %s: %s; standing by", self.name, exc)
                except PyMongoError as exc:
                    log.warning("projection %s: database error (%s); retrying", self.name, exc)
                    await self._pause(stop, min(1.0, self.options.standby_poll))
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
        if self._lease is not None and self._holds_lease():
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
            self.options.lease_ttl_s,
            min_version=floor,
            session_id=self._session.session_id,
        )
        if version is None:
            return None
        lease = HeldLease(self.leases, self.name, self.owner, version, self.options.lease_ttl_s)
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
        # A STOP block is not kept across a restart or takeover: the new holder tries the
        # blocking event again (its dead letter is open), and either applies it, removing
        # the dead letter in the batch's transaction, or blocks there again.
        settled = None
        if checkpoint.inline:  # handed over to the appends: keep it so, or take it back
            settled = await take_back(
                self.session(),
                self.checkpoints,
                self.store.inline,
                self.name,
                fence,
                keep_inline=self.inline_wanted,
            )
        if settled is not None and settled[1]:
            self.position = self.head = settled[0]
            self.blocked_at = None
            self.state = RunnerState.INLINE
            return
        if self.state == RunnerState.INLINE:
            self.state = RunnerState.IDLE
        await self._resume_at(checkpoint.position if settled is None else settled[0], None)
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
            if self.state == RunnerState.INLINE:
                if await self._still_inline():
                    await self._pause(stop, self.options.idle_poll_s)  # appends wake nothing
                continue
            if self.blocked_at is not None:
                self.state = RunnerState.BLOCKED
                await self._check_unblocked()
            else:
                try:
                    more = await self.step()
                except CheckpointMoved:
                    continue
                if more:
                    continue
                self.state = RunnerState.LIVE if self.blocked_at is None else RunnerState.BLOCKED
                if await self._hand_over():
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.idle_poll_s)

    async def _hand_over(self) -> bool:
        """Caught up and inline wanted: switch to inline (esmongo.projections.inline)."""
        if not self.inline_wanted or self.blocked_at is not None or self.position < self.head:
            return False
        handed = await hand_over(
            self.session(),
            self.checkpoints,
            self.store.inline,
            self.projection,
            self._fence,
            self.position,
        )
        if handed:
            self.state = RunnerState.INLINE
            self.metrics.lag(0, 0.0)
        return handed

    async def _still_inline(self) -> bool:
        """While inline: True if it still is; otherwise go on asynchronously from where
        the read model is (an append from a process that does not apply it switched it off)."""
        settled = await take_back(
            self.session(),
            self.checkpoints,
            self.store.inline,
            self.name,
            self._fence,
            keep_inline=True,
        )
        if settled is not None and settled[1]:
            self.position = self.head = settled[0]
            self.metrics.lag(0, 0.0)
            return True
        position = await self.checkpoints.position(self.name) if settled is None else settled[0]
        log.info("projection %s: no longer inline; catching up from %d", self.name, position)
        self.state = RunnerState.LIVE
        await self._resume_at(position, None)
        return False

    async def _check_unblocked(self) -> None:
        checkpoint = await self.checkpoints.get(self.name)
        if checkpoint is None or checkpoint.fence != self._fence:
            raise LeaseLost(f"the checkpoint of {self.name} was fenced by another runner")
        if checkpoint.position != self.position or checkpoint.blocked_at is None:
            log.info("projection %s: unblocked at position %d", self.name, checkpoint.position)
            await self._resume_at(checkpoint.position, None)

    def session(self) -> AsyncClientSession:
        if self._session is None:
            raise LeaseLost(f"the lease of {self.name} was lost before commit")
        return self._session

    # ---- for callers --------------------------------------------------------------

    async def wait_until(self, sequence: int, timeout_s: float = 10.0) -> int:
        """Wait until this projection has applied `sequence` (read-your-writes).

        Follows this runner when it holds the lease, the stored checkpoint otherwise.
        """
        inline = self.state == RunnerState.INLINE
        if inline and self.store.inline_applied_through(self.name) >= sequence:
            return sequence  # this process's append applied it in its transaction
        deadline = time.monotonic() + timeout_s
        while self.position < sequence:
            if self.state == RunnerState.INLINE:
                return await self.checkpoints.wait_until(self.name, sequence, timeout_s)
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
                if self.state == RunnerState.INLINE:
                    return self.position  # the appends keep it current
                if self.blocked_at is not None:
                    raise ProjectionBlocked(
                        f"projection {self.name} is blocked by the dead letter at "
                        f"{self.blocked_at}; retry or discard it"
                    )
                try:
                    more = await self.step()
                except CheckpointMoved:
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
