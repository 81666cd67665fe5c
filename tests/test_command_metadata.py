"""Handlers see on the command side exactly the events replay gives them, metadata included
(issue 10, item 7): a snapshot of the live object equals a full replay."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import Aggregate, DomainError, EventStore, Repository, SnapshotStore, applies
from esmongo.codec import Document
from esmongo.model import EventLike


class Ticket(Aggregate):
    """An aggregate whose handlers read metadata: who changed it last, and when."""

    aggregate_type = "ticket"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.open = False
        self.notes = 0
        self.last_by: str | None = None
        self.last_at: datetime | None = None
        self.trail: list[str] = []

    def start(self) -> None:
        if self.open:
            raise DomainError("already open")
        self.raise_event("ticket.opened", {})

    def note(self, text: str) -> None:
        if not self.open:
            raise DomainError("closed")
        self.raise_event("ticket.noted", {"text": text}, metadata={"kind": "note"})

    def finish(self) -> None:
        if not self.open:
            raise DomainError("not open")
        self.raise_event("ticket.closed", {})

    def _touch(self, event: EventLike) -> None:
        self.last_by = event.metadata.get("userId")
        self.last_at = event.metadata.get("timestamp")
        self.trail.append(f"{event.metadata.get('userId')}:{event.metadata.get('kind')}")

    @applies("ticket.opened")
    def _opened(self, event: EventLike) -> None:
        self.open = True
        self._touch(event)

    @applies("ticket.noted")
    def _noted(self, event: EventLike) -> None:
        self.notes += 1
        self._touch(event)

    @applies("ticket.closed")
    def _closed(self, event: EventLike) -> None:
        self.open = False
        self._touch(event)

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "notes": self.notes,
            "lastBy": self.last_by,
            "lastAt": self.last_at,
            "trail": list(self.trail),
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.open = state["open"]
        self.notes = state["notes"]
        self.last_by = state["lastBy"]
        self.last_at = state["lastAt"]
        self.trail = list(state["trail"])


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    store = EventStore(db)
    await store.init()
    await SnapshotStore(db).init()
    return store


def begin(ticket: Ticket, metadata: Mapping[str, Any]) -> None:
    """Give the command's metadata before it raises events (the fix's API)."""
    ticket.begin_command(metadata=metadata)


async def handle(
    tickets: Repository[Ticket], ticket_id: str, actions: list[str], user: str
) -> list[Any]:
    """One command as an application handler runs it: load, decide, save with metadata."""
    metadata = {"userId": user, "source": "test", "correlationId": f"corr-{user}"}
    ticket = await tickets.load_or_new(ticket_id)
    begin(ticket, metadata)
    for action in actions:
        with contextlib.suppress(DomainError):  # refused: no event
            getattr(ticket, action)() if action != "note" else ticket.note(user)
    raised = ticket.uncommitted_events
    recorded = await tickets.save(ticket, metadata=metadata)
    return [(r.metadata, e.metadata) for r, e in zip(raised, recorded, strict=True)]


ACTIONS = st.lists(st.sampled_from(["start", "note", "finish"]), min_size=1, max_size=4)
COMMANDS = st.lists(st.tuples(ACTIONS, st.sampled_from(["ann", "bob", "cy"])), max_size=10)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(every=st.integers(min_value=1, max_value=4), commands=COMMANDS)
async def test_load_via_snapshot_equals_load_via_replay(
    store: EventStore, every: int, commands: list[tuple[list[str], str]]
) -> None:
    snapshots = SnapshotStore(store.db)
    with_snapshots = Repository(store, Ticket, snapshots=snapshots, snapshot_every=every)
    replay_only = Repository(store, Ticket)
    ticket_id = f"t_{uuid.uuid4().hex}"
    for actions, user in commands:
        for raised, recorded in await handle(with_snapshots, ticket_id, actions, user):
            assert raised == recorded  # the handler saw what the store keeps
        await with_snapshots.drain()
        from_snapshot = await with_snapshots.load_or_new(ticket_id)
        replayed = await replay_only.load_or_new(ticket_id)
        assert from_snapshot.version == replayed.version
        assert from_snapshot.snapshot_state() == replayed.snapshot_state()


async def test_a_snapshot_taken_from_the_live_object_equals_a_replay(store: EventStore) -> None:
    """The case the issue reproduced, with no randomness: snapshot at every event."""
    snapshots = SnapshotStore(store.db)
    tickets = Repository(store, Ticket, snapshots=snapshots, snapshot_every=1)
    await handle(tickets, "t1", ["start", "note"], "ann")
    await tickets.drain()
    snapshot = await snapshots.get("ticket", "t1")
    assert snapshot is not None and snapshot.version == 2
    replayed = await Repository(store, Ticket).load("t1")
    assert dict(snapshot.state) == replayed.snapshot_state()
    assert replayed.last_by == "ann" and replayed.trail == ["ann:None", "ann:note"]
