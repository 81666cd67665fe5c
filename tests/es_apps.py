"""An `eventsourcing` leader and a process application following it, for the end-to-end
tests of esmongo.eventsourcing (tests/test_eventsourcing_system.py, es_follower.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.system import ProcessApplication, System

PAUSE_AT = "ES_TEST_PAUSE_AT"
"""Environment: `N:path`: the follower, about to process its N-th order, creates `path`
and waits there for ever (to be killed at a known point, never by timing)."""


class Order(Aggregate):
    @event("Placed")
    def __init__(self, item: str) -> None:
        self.item = item


class Shipment(Aggregate):
    @event("Created")
    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id

    @staticmethod
    def create_id(order_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/shipments/{order_id}")


class Orders(Application[UUID]):
    def place(self, item: str) -> UUID:
        order = Order(item)
        self.save(order)
        return order.id


class Fulfilment(ProcessApplication[UUID]):
    processed = 0

    @singledispatchmethod
    def policy(
        self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]
    ) -> None:
        """Other events: nothing to do."""

    @policy.register
    def _(self, domain_event: Order.Placed, processing_event: ProcessingEvent[UUID]) -> None:
        type(self).processed += 1
        _maybe_pause(type(self).processed)
        processing_event.collect_events(Shipment(domain_event.originator_id))

    def shipments(self) -> list[Any]:
        found = self.recorder.select_notifications(start=None, limit=100_000)
        return [n for n in found if n.topic.endswith("Shipment.Created")]


def _maybe_pause(count: int) -> None:
    setting = os.environ.get(PAUSE_AT)
    if not setting:
        return
    at, _, path = setting.partition(":")
    if count == int(at):
        Path(path).write_text(str(os.getpid()))
        while True:  # killed here by the test
            time.sleep(3600)


def system() -> System:
    return System(pipes=[[Orders, Fulfilment]])
