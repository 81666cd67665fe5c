"""One transaction for the batches of several projections of one process.

The runners of a daemon are woken by the same insert and read the same window
(SharedSource), so their batches are ready at about the same moment. Committed one by one,
each costs a checkpoint update, its bulk writes and a commit; on the embedded server the
commits alone were a fifth of its busy time while live. Committed together, the batches
share one transaction, one command moving their checkpoints and one commit, and each still
moves only its own checkpoint under its own fence, so what each projection guarantees is
unchanged.

No timer: the first runner to commit leads, and waits only for the runners of the group
that are between their read and their commit (at most `max_wait_s`, in case one is slow,
e.g. retrying a failing handler). When the shared transaction fails for any reason (a lost
fence, a failed write, a conflict), every batch is committed again on its own, so each
runner gets its own outcome, exactly as without the group.

The transaction runs in the session of the leading runner, which its lease records: a
process taking over that lease kills the session and so aborts the transaction, and the
other runners' batches are committed again on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pymongo.asynchronous.client_session import AsyncClientSession

from esmongo.projections.checkpoints import Advance, Checkpoints
from esmongo.projections.errors import CommitInterrupted

log = logging.getLogger(__name__)

PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step ("lead": a runner is about to lead a
commit, before it gathers the others), to make a race between runners deterministic."""


class Member(Protocol):
    """What the group needs of a runner."""

    name: str
    checkpoints: Checkpoints

    def session(self) -> AsyncClientSession:
        """The runner's own session (raises LeaseLost when it holds none)."""
        ...


Write = Callable[[AsyncClientSession], Awaitable[int]]
"""Writes one batch, once its checkpoint moved, in the transaction; returns operations sent."""


@dataclass(eq=False)
class _Entry:
    member: Member
    advance: Advance
    write: Write
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CommitGroup:
    """Commits the batches that several runners have ready together in one transaction."""

    def __init__(self, *, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._stepping: set[int] = set()
        self._pending: list[_Entry] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.transactions = 0
        self.batches = 0
        self.fallbacks = 0

    @property
    def busy(self) -> int:
        """Members between their read and their commit, or waiting in it."""
        return len(self._stepping | {id(e.member) for e in self._pending})

    @contextlib.contextmanager
    def stepping(self, member: Member) -> Iterator[None]:
        """Mark `member` as between its read and its commit: a leader waits for it."""
        self._stepping.add(id(member))
        try:
            yield
        finally:
            self._stepping.discard(id(member))
            self._changed.set()

    async def commit(self, member: Member, advance: Advance, write: Write) -> int:
        """Move the checkpoint and commit `write` with whatever the other members have
        ready; returns the operations it sent."""
        entry = _Entry(member, advance, write)
        self._pending.append(entry)
        self._changed.set()
        async with self._lock:
            if not entry.done.done():
                try:
                    if (hook := PAUSE_POINTS.get("lead")) is not None:
                        await hook()
                    await self._gather()
                except BaseException:  # cancelled before anything was sent: withdraw
                    self._pending.remove(entry)
                    raise
                entries, self._pending = self._pending, []
                try:
                    await self._run(entries)
                finally:  # cancelled while leading: the others must not wait forever
                    for other in entries:
                        if other is entry:
                            other.done.cancel()
                        elif not other.done.done():
                            other.done.set_exception(CommitInterrupted(other.member.name))
        return await entry.done

    async def _gather(self) -> None:
        """Wait until every member that is stepping has submitted, or `max_wait_s`."""
        deadline = time.monotonic() + self.max_wait_s
        while not self._stepping <= {id(e.member) for e in self._pending}:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def _run(self, entries: list[_Entry]) -> None:
        self.batches += len(entries)
        if len(entries) > 1:
            sent: dict[int, int] = {}

            async def write_all(session: AsyncClientSession) -> None:
                await entries[0].member.checkpoints.apply(session, [e.advance for e in entries])
                for i, entry in enumerate(entries):
                    sent[i] = await entry.write(session)

            try:
                await entries[0].member.session().with_transaction(write_all)
            except Exception as exc:
                self.fallbacks += 1
                log.info(
                    "projections %s: the shared transaction failed (%s); committing each "
                    "batch on its own",
                    ", ".join(e.member.name for e in entries),
                    exc,
                )
            else:
                self.transactions += 1
                for i, entry in enumerate(entries):
                    entry.done.set_result(sent[i])
                return
        for entry in entries:
            await self._alone(entry)

    async def _alone(self, entry: _Entry) -> None:
        """The batch in its own transaction, in its runner's session, as without a group."""
        sent = 0

        async def write(session: AsyncClientSession) -> None:
            nonlocal sent
            await entry.member.checkpoints.apply(session, [entry.advance])
            sent = await entry.write(session)

        try:
            await entry.member.session().with_transaction(write)
        except Exception as exc:
            entry.done.set_exception(exc)
        else:
            self.transactions += 1
            entry.done.set_result(sent)
