"""The aggregate base class: handlers, raised events, replay, strictness. Pure: no database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from esmongo import Aggregate, RecordedEvent, applies
from esmongo.errors import UnknownEventTypeError
from esmongo.model import EventLike


class Counter(Aggregate):
    aggregate_type = "counter"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.value = 0
        self.touched: datetime | None = None

    def add(self, n: int) -> None:
        if n <= 0:
            raise ValueError("n must be positive")
        self.raise_event("counter.added", {"n": n}, metadata={"why": "test"})

    @applies("counter.added")
    def _added(self, event: EventLike) -> None:
        self.value += event.data["n"]
        self.touched = event.timestamp

    @applies("counter.reset")
    def _reset(self, event: EventLike) -> None:
        self.value = 0


class StrictCounter(Counter):
    strict = True


class DoublingCounter(Counter):
    """Inherits the reset handler, overrides the add handler."""

    @applies("counter.added")
    def _added_twice(self, event: EventLike) -> None:
        self.value += 2 * event.data["n"]


def recorded(
    event_type: str, version: int, data: dict[str, Any] | None = None, event_version: str = "1.0"
) -> RecordedEvent:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    return RecordedEvent(
        event_id=f"e{version}",
        event_type=event_type,
        event_version=event_version,
        aggregate_type="counter",
        aggregate_id="c1",
        aggregate_version=version,
        data=data or {},
        metadata={},
        timestamp=at,
        sequence=version,
    )


def test_new_aggregate_is_empty() -> None:
    counter = Counter("c1")
    assert (counter.id, counter.version, counter.loaded_version) == ("c1", 0, 0)
    assert not counter.exists
    assert counter.uncommitted_events == []


def test_raised_events_change_state_through_handlers() -> None:
    counter = Counter("c1")
    counter.add(2)
    counter.add(3)
    assert counter.value == 5
    assert counter.version == 2
    assert counter.loaded_version == 0
    assert counter.exists
    events = counter.uncommitted_events
    assert [(e.event_type, e.data) for e in events] == [
        ("counter.added", {"n": 2}),
        ("counter.added", {"n": 3}),
    ]
    # The time under "timestamp", as the store records it: handlers see what replay sees.
    assert events[0].metadata == {"why": "test", "timestamp": events[0].timestamp}
    assert events[0].timestamp is not None
    assert events[0].timestamp.tzinfo is not None
    assert counter.touched == events[1].timestamp
    assert events[0].event_id != events[1].event_id
    # A copy: callers cannot change what will be saved.
    counter.uncommitted_events.clear()
    assert len(counter.uncommitted_events) == 2


def test_refused_command_raises_no_event() -> None:
    counter = Counter("c1")
    with pytest.raises(ValueError):
        counter.add(0)
    assert counter.version == 0
    assert counter.uncommitted_events == []


def test_mark_committed_moves_loaded_version() -> None:
    counter = Counter("c1")
    counter.add(1)
    counter.mark_committed()
    assert (counter.version, counter.loaded_version, counter.uncommitted_events) == (1, 1, [])
    counter.add(1)
    assert (counter.version, counter.loaded_version) == (2, 1)


def test_replay_equals_the_command_side() -> None:
    live = Counter("c1")
    live.add(4)
    live.add(6)
    replayed = Counter("c1")
    for version, event in enumerate(live.uncommitted_events, start=1):
        replayed.apply(recorded(event.event_type, version, dict(event.data)))
    assert (replayed.value, replayed.version) == (live.value, live.version)
    assert replayed.loaded_version == 2  # replayed events are not uncommitted


def test_replay_refuses_a_version_gap() -> None:
    counter = Counter("c1")
    counter.apply(recorded("counter.added", 1, {"n": 1}))
    with pytest.raises(ValueError, match="does not follow"):
        counter.apply(recorded("counter.added", 3, {"n": 1}))
    with pytest.raises(ValueError, match="does not follow"):
        counter.apply(recorded("counter.added", 1, {"n": 1}))
    assert (counter.value, counter.version) == (1, 1)


def test_subclass_inherits_and_overrides_handlers() -> None:
    counter = DoublingCounter("c1")
    counter.add(3)
    assert counter.value == 6
    counter.apply(recorded("counter.reset", 2))
    assert counter.value == 0
    assert Counter("c1")._handlers["counter.added"] is Counter._added


def test_unknown_event_type_warns_once_and_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Lenient(Counter):
        pass

    counter = Lenient("c1")
    with caplog.at_level(logging.WARNING, logger="esmongo.model.aggregate"):
        counter.apply(recorded("counter.added", 1, {"n": 5}))
        counter.apply(recorded("counter.renamed", 2, {"name": "x"}))
        counter.apply(recorded("counter.renamed", 3, {"name": "y"}))
        Lenient("c2").apply(recorded("counter.renamed", 1))
        counter.raise_event("counter.colored", {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Lenient has no handler for counter.renamed: skipped (warned once)",
        "Lenient has no handler for counter.colored: skipped (warned once)",
    ]
    # Skipped, but the version still moves on.
    assert (counter.value, counter.version) == (5, 4)


def test_unknown_event_type_raises_in_strict_mode() -> None:
    counter = StrictCounter("c1")
    counter.apply(recorded("counter.added", 1, {"n": 1}))
    with pytest.raises(UnknownEventTypeError, match=r"counter\.renamed"):
        counter.apply(recorded("counter.renamed", 2))
    assert counter.version == 1
    with pytest.raises(UnknownEventTypeError):
        counter.raise_event("counter.renamed", {})
    assert counter.uncommitted_events == []
    assert counter.version == 1


def test_aggregate_without_snapshot_support_says_so() -> None:
    with pytest.raises(NotImplementedError, match="Counter"):
        Counter("c1").snapshot_state()
    with pytest.raises(NotImplementedError):
        Counter.from_snapshot("c1", 3, {})
