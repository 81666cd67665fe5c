"""A tiny application that is not the bank, for the generic command line
(`ESMONGO_APP=tally_app:make`): one aggregate, its two event types, one projection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.application import Application
from esmongo.codec import Document
from esmongo.events import RecordedEvent
from esmongo.model.aggregate import Aggregate, EventLike, applies
from esmongo.projections import Projection, Update, handles
from esmongo.schema.registry import EventSchema

TALLIES = "tallies"


class Tally(Aggregate):
    aggregate_type = "tally"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def add(self, amount: int) -> None:
        self.raise_event("tally.added", {"amount": amount})

    @applies("tally.added")
    def _added(self, event: EventLike) -> None:
        self.total += int(event.data["amount"])

    def snapshot_state(self) -> dict[str, Any]:
        return {"total": self.total}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.total = int(state["total"])


SCHEMAS = [
    EventSchema(
        "tally.added",
        "1.0",
        {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "integer"}},
            "additionalProperties": False,
        },
        description="An amount was added to a tally",
        projections=(TALLIES,),
    )
]


class TalliesReadModel(Projection):
    """One document per tally, with its total."""

    name = TALLIES
    collections = {TALLIES: []}

    @handles("tally.added")
    def added(self, event: RecordedEvent) -> Update:
        return Update(TALLIES, {"tallyId": event.aggregate_id}, inc={"total": event.data["amount"]})


def make(db: AsyncDatabase[Document]) -> Application:
    """The factory `ESMONGO_APP` names."""
    return Application(db, aggregates=[Tally], schemas=SCHEMAS, projections=[TalliesReadModel()])


def not_an_application(db: AsyncDatabase[Document]) -> object:
    """A factory that returns something else: refused as configuration."""
    return {"db": db}
