"""The repository: load (not found vs new), save with the loaded version, save_all."""

from __future__ import annotations

import asyncio

import pytest

from esmongo import (
    Aggregate,
    AggregateNotFoundError,
    ConcurrencyError,
    EventStore,
    Repository,
    applies,
)
from esmongo.events import StreamId
from esmongo.model import EventLike


class Cart(Aggregate):
    aggregate_type = "cart"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.items: list[str] = []

    def add(self, *items: str) -> None:
        for item in items:
            self.raise_event("cart.item_added", {"item": item}, metadata={"source": "cart"})

    @applies("cart.item_added")
    def _added(self, event: EventLike) -> None:
        self.items.append(event.data["item"])


@pytest.fixture
def carts(store: EventStore) -> Repository[Cart]:
    return Repository(store, Cart)


async def test_not_found_versus_new(carts: Repository[Cart]) -> None:
    with pytest.raises(AggregateNotFoundError) as caught:
        await carts.load("nope")
    assert caught.value.stream == StreamId("cart", "nope")
    assert "cart/nope" in str(caught.value)
    cart = await carts.load_or_new("nope")
    assert (cart.id, cart.version, cart.exists, cart.items) == ("nope", 0, False, [])


async def test_save_then_load(carts: Repository[Cart], store: EventStore) -> None:
    cart = await carts.load_or_new("c1")
    cart.add("apple", "pear")
    recorded = await carts.save(cart)
    assert [e.aggregate_version for e in recorded] == [1, 2]
    assert (cart.version, cart.loaded_version, cart.uncommitted_events) == (2, 2, [])
    loaded = await carts.load("c1")
    assert (loaded.items, loaded.version, loaded.loaded_version) == (["apple", "pear"], 2, 2)
    loaded.add("plum")
    await carts.save(loaded)
    assert (await carts.load("c1")).items == ["apple", "pear", "plum"]
    assert await store.stream_version("cart", "c1") == 3


async def test_saving_nothing_writes_nothing(carts: Repository[Cart], store: EventStore) -> None:
    cart = await carts.load_or_new("c1")
    assert await carts.save(cart) == []
    assert await store.head_sequence() == 0


async def test_a_stale_copy_cannot_overwrite_a_newer_change(carts: Repository[Cart]) -> None:
    cart = await carts.load_or_new("c1")
    cart.add("apple")
    await carts.save(cart)
    first, second = await asyncio.gather(carts.load("c1"), carts.load("c1"))
    first.add("pear")
    second.add("plum")
    await carts.save(first)
    with pytest.raises(ConcurrencyError) as caught:
        await carts.save(second)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert (await carts.load("c1")).items == ["apple", "pear"]


async def test_two_new_aggregates_with_one_id_cannot_both_be_created(
    carts: Repository[Cart],
) -> None:
    first, second = Cart("c1"), Cart("c1")
    first.add("apple")
    second.add("pear")
    await carts.save(first)
    with pytest.raises(ConcurrencyError):
        await carts.save(second)
    assert (await carts.load("c1")).items == ["apple"]


async def test_command_metadata_is_merged_into_each_event(
    carts: Repository[Cart], store: EventStore
) -> None:
    cart = Cart("c1")
    metadata = {"userId": "u1", "source": "api", "correlationId": "k"}
    cart.begin_command(metadata=metadata)
    cart.add("apple")
    (raised,) = cart.uncommitted_events
    await carts.save(cart, metadata=metadata)  # checked: the events carry it
    (event,) = [e async for e in store.read_stream("cart", "c1")]
    # The event's own metadata wins over the command's.
    assert event.metadata["source"] == "cart"
    assert event.metadata["userId"] == "u1"
    assert event.metadata["correlationId"] == "k"
    assert [e.event_id async for e in store.read_by_correlation("k")] == [event.event_id]
    # What the handler saw is what the store recorded.
    assert raised.metadata == event.metadata


async def test_metadata_given_only_to_save_is_refused(
    carts: Repository[Cart], store: EventStore
) -> None:
    """Added after the handlers ran, it would be stored but unseen by them (item 7)."""
    cart = Cart("c1")
    cart.add("apple")
    with pytest.raises(ValueError, match=r"begin_command\(metadata=") as caught:
        await carts.save(cart, metadata={"userId": "u1"})
    assert "cart/c1" in str(caught.value) and "userId" in str(caught.value)
    assert await store.head_sequence() == 0


async def test_save_all_is_all_or_nothing(carts: Repository[Cart], store: EventStore) -> None:
    a, b = Cart("a"), Cart("b")
    a.add("x")
    b.add("y")
    recorded = await carts.save_all([a, b])
    assert [[e.aggregate_id for e in s] for s in recorded] == [["a"], ["b"]]
    stale_b = await carts.load("b")
    fresh_b = await carts.load("b")
    fresh_b.add("z")
    await carts.save(fresh_b)
    a.add("x2")
    stale_b.add("y2")
    with pytest.raises(ConcurrencyError):
        await carts.save_all([a, stale_b])
    assert (await carts.load("a")).items == ["x"]
    assert (await carts.load("b")).items == ["y", "z"]
    assert await store.head_sequence() == 3
