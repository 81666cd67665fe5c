"""Upcaster chains (property-based) and upcasting on every read path: aggregates and
projections only ever see the latest version, and the stored documents stay as written."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import Aggregate, EventStore, NewEvent, RecordedEvent, Upcasters, applies
from esmongo.codec import Document
from esmongo.errors import SchemaError
from esmongo.model import EventLike, TemporalQueries
from esmongo.ops.schema_check import version_key

T0 = datetime(2024, 5, 1, tzinfo=UTC)
PURE = settings(max_examples=40, deadline=None)


def recorded(event_type: str, version: str, data: Mapping[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        event_id="e1",
        event_type=event_type,
        event_version=version,
        aggregate_type="thing",
        aggregate_id="t1",
        aggregate_version=1,
        data=data,
        metadata={},
        timestamp=T0,
        sequence=1,
    )


def step(index: int) -> Any:
    """Step `index` appends its number to the trail: the result shows which steps ran, in
    which order, and that each one saw the previous one's output."""

    def transform(data: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**data, "trail": [*data["trail"], index]}

    return transform


def version(i: int) -> str:
    return f"{i}.0"


@st.composite
def chains(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A chain of n steps (1.0 -> 2.0 -> ... -> n+1.0) and an order to register them in."""
    n = draw(st.integers(1, 12))
    order = draw(st.permutations(range(1, n + 1)))
    return n, list(order)


@PURE
@given(chain=chains(), start=st.integers(1, 13), other=st.booleans())
def test_a_chain_takes_any_version_to_the_latest_through_every_later_step(
    chain: tuple[int, list[int]], start: int, other: bool
) -> None:
    n, order = chain
    upcasters = Upcasters()
    for i in order:  # registration order does not matter
        upcasters.register("thing.done", version(i), version(i + 1), step(i))
    if other:  # another type's chain does not interfere
        upcasters.register("other.done", "1.0", "2.0", step(99))
    start = min(start, n + 1)
    original = recorded("thing.done", version(start), {"trail": [], "keep": "x"})
    upcast = upcasters.upcast(original)
    assert upcast.event_version == version(n + 1)
    assert upcast.data == {"trail": list(range(start, n + 1)), "keep": "x"}
    assert upcasters.latest("thing.done", version(start)) == version(n + 1)
    path = upcasters.path("thing.done", version(start))
    assert path is not None
    assert [s.from_version for s in path] == [version(i) for i in range(start, n + 1)]
    if start == n + 1:
        assert upcast is original  # already the latest: untouched
    else:
        assert upcast.upcast_from == version(start)
        assert original.data == {"trail": [], "keep": "x"}  # the read copy, never the original
        assert (upcast.event_id, upcast.sequence, upcast.metadata) == ("e1", 1, {})
    assert upcasters.upcast(upcast) == upcast  # idempotent once at the latest


@PURE
@given(chain=chains(), back=st.integers(1, 12))
def test_a_step_that_would_loop_is_refused_and_leaves_the_chain_working(
    chain: tuple[int, list[int]], back: int
) -> None:
    n, order = chain
    upcasters = Upcasters()
    for i in order:
        upcasters.register("thing.done", version(i), version(i + 1), step(i))
    back = min(back, n)
    with pytest.raises(SchemaError):
        upcasters.register("thing.done", version(n + 1), version(back), step(0))
    with pytest.raises(SchemaError):  # a second step from the same version
        upcasters.register("thing.done", version(back), version(n + 5), step(0))
    assert upcasters.latest("thing.done", "1.0") == version(n + 1)


@PURE
@given(st.lists(st.lists(st.integers(0, 120), min_size=1, max_size=4), min_size=2, max_size=8))
def test_versions_compare_by_their_numbers(parts: list[list[int]]) -> None:
    versions = [".".join(map(str, p)) for p in parts]
    assert sorted(versions, key=version_key) == [
        ".".join(map(str, p)) for p in sorted(parts, key=tuple)
    ]


# ---- every read path upcasts ---------------------------------------------------------


class Counter(Aggregate):
    """Handles only the latest shape (3.0): {"by": {"amount": Decimal, "unit": str}}."""

    aggregate_type = "counter"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = Decimal(0)
        self.units: list[str] = []

    @applies("counter.added")
    def _added(self, event: EventLike) -> None:
        self.total += Decimal(event.data["by"]["amount"])
        self.units.append(event.data["by"]["unit"])


def counter_upcasters() -> Upcasters:
    upcasters = Upcasters()
    # 1.0 {"n": int} -> 2.0 {"amount": str} -> 3.0 {"by": {"amount", "unit"}}
    upcasters.register("counter.added", "1.0", "2.0", lambda d: {"amount": str(d["n"])})
    upcasters.register(
        "counter.added", "2.0", "3.0", lambda d: {"by": {"amount": d["amount"], "unit": "pc"}}
    )
    return upcasters


def old_and_new(at: datetime) -> list[NewEvent]:
    return [
        NewEvent("counter.added", {"n": 1}, event_version="1.0", timestamp=at),
        NewEvent("counter.added", {"amount": "2"}, event_version="2.0", timestamp=at),
        NewEvent(
            "counter.added",
            {"by": {"amount": Decimal("4.5"), "unit": "kg"}},
            event_version="3.0",
            timestamp=at + timedelta(seconds=1),
            metadata={"correlationId": "c1"},
        ),
    ]


async def test_every_read_path_sees_the_latest_version_only(db: AsyncDatabase[Document]) -> None:
    store = EventStore(db, upcasters=counter_upcasters())
    await store.init()
    await store.append("counter", "c1", old_and_new(T0))
    await store.append("counter", "c2", old_and_new(T0)[:1])

    reads = {
        "read_stream": [e async for e in store.read_stream("counter", "c1")],
        "read_all": [e async for e in store.read_all() if e.aggregate_id == "c1"],
        "read_by_type": [
            e async for e in store.read_by_type("counter.added") if e.aggregate_id == "c1"
        ],
    }
    for name, events in reads.items():
        assert [e.event_version for e in events] == ["3.0"] * 3, name
        assert [e.upcast_from for e in events] == ["1.0", "2.0", None], name
        assert [e.data["by"] for e in events] == [
            {"amount": "1", "unit": "pc"},
            {"amount": "2", "unit": "pc"},
            {"amount": Decimal("4.5"), "unit": "kg"},
        ], name
    (correlated,) = [e async for e in store.read_by_correlation("c1")]
    assert correlated.event_version == "3.0"

    queries = TemporalQueries(store, Counter)
    state = await queries.state_at("c1", at=T0)
    assert state is not None
    assert (state.total, state.units) == (Decimal(3), ["pc", "pc"])
    listed = {c.id: c.total async for c in queries.aggregates_at(T0 + timedelta(seconds=5))}
    assert listed == {"c1": Decimal("7.5"), "c2": Decimal(1)}

    stored = [d async for d in db["events"].find({}, sort=[("sequence", 1)])]
    assert [d["eventVersion"] for d in stored] == ["1.0", "2.0", "3.0", "1.0"]
    assert stored[0]["data"] == {"n": 1}  # upcasting never rewrites a stored event
