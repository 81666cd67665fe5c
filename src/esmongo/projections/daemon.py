"""Several projections in one process: one change stream, one runner (and checkpoint) each.

`run_projections(store, projections, stop)` is what the worker module, the CLI and the
service call. A runner that crashes on an unexpected error is logged and restarted after
a pause; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.projections.commit_group import CommitGroup
from esmongo.projections.options import RunnerOptions, default_owner
from esmongo.projections.projection import Projection
from esmongo.projections.runner import ProjectionRunner
from esmongo.projections.source import SharedSource
from esmongo.projections.watcher import EventWatcher
from esmongo.store import EventStore

log = logging.getLogger(__name__)
RESTART_PAUSE_S = 1.0


class ProjectionDaemon:
    """Runs a set of projections until stopped. Use `start()`/`stop()` or `run(stop)`."""

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        options: RunnerOptions | None = None,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be distinct: {names}")
        options = options or RunnerOptions()
        self.store = store
        self.owner = options.owner or default_owner()
        self.options = replace(options, owner=self.owner)
        self.watcher = EventWatcher(store)
        self.source = SharedSource(
            store,
            fetch_size=options.batch_size,
            capacity=options.catch_up_size,  # a catch-up batch fits the shared window
            known_head=lambda: self.watcher.last_sequence,
        )
        self.group = CommitGroup()
        self.runners = [
            ProjectionRunner(
                store,
                projection,
                self.options,
                watcher=self.watcher,
                source=self.source,
                group=self.group,
            )
            for projection in projections
        ]
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def runner(self, name: str) -> ProjectionRunner:
        for runner in self.runners:
            if runner.name == name:
                return runner
        raise KeyError(name)

    async def init(self) -> None:
        for runner in self.runners:
            await runner.init()

    async def run(self, stop: asyncio.Event) -> None:
        """Init, open the change stream, run every projection until `stop` is set."""
        await self.init()
        watch = asyncio.create_task(self.watcher.run(), name="projections:watcher")
        try:
            # Open the stream before the first catch-up read: whatever commits after that
            # read wakes the runners, whatever committed before it is read.
            ready = asyncio.create_task(self.watcher.ready.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopping.cancel()
            await asyncio.gather(*(self._keep_running(r, stop) for r in self.runners))
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _keep_running(self, runner: ProjectionRunner, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await runner.run(stop)
            except Exception:
                log.exception("projection %s crashed; restarting it", runner.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_PAUSE_S)

    @property
    def running(self) -> bool:
        """True while started in the background and not finished (for health checks)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run in the background of the current event loop (for a service or tests)."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop), name="projections")

    async def stop(self) -> None:
        """Stop every runner after its current batch, and release the leases."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def wait_until(self, sequence: int, timeout_s: float = 10.0) -> None:
        """Wait until every projection has applied `sequence` (read-your-writes)."""
        await asyncio.gather(*(r.wait_until(sequence, timeout_s) for r in self.runners))


async def run_projections(
    db_or_store: AsyncDatabase[Document] | EventStore,
    projections: Sequence[Projection],
    stop: asyncio.Event,
    options: RunnerOptions | None = None,
) -> None:
    """Run `projections` until `stop` is set (for `esmongo projections run` and services).

    Pass an EventStore when events need upcasters.
    """
    store = (
        db_or_store if isinstance(db_or_store, EventStore) else await EventStore.open(db_or_store)
    )
    await ProjectionDaemon(store, projections, options).run(stop)
