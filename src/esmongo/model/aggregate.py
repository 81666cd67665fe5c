"""The aggregate base class. Pure: no I/O.

Command methods check the rules against the current state and call `raise_event`; state
changes only in handlers registered with `@applies(event_type)`, which replay calls in the
same way. So the state after a command equals the state after replaying its events: a raised
event carries, when its handler runs, exactly the metadata and time the store will record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

from esmongo.errors import UnknownEventTypeError
from esmongo.events import (
    DEFAULT_EVENT_VERSION,
    NewEvent,
    RecordedEvent,
    new_event_id,
    stable_event_id,
    utc_now,
)

log = logging.getLogger(__name__)


class EventLike(Protocol):
    """What a handler may read of an event: the same for raised and replayed events."""

    @property
    def event_type(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...
    @property
    def timestamp(self) -> datetime | None: ...


A = TypeVar("A", bound="Aggregate")
TIMESTAMP = "timestamp"
"""The metadata key the store sets to the event's time (so handlers see it when raised too)."""
Handler = Callable[[Any, EventLike], None]
_HANDLES = "__esmongo_applies__"


def applies(
    event_type: str,
) -> Callable[[Callable[[A, EventLike], None]], Callable[[A, EventLike], None]]:
    """Mark a method as the state change for one event type."""

    def mark(fn: Callable[[A, EventLike], None]) -> Callable[[A, EventLike], None]:
        setattr(fn, _HANDLES, event_type)
        return fn

    return mark


def command_event_id(aggregate_type: str, aggregate_id: str, command_id: str, index: int) -> str:
    """The id of the `index`-th event (from 0) a command raises on one aggregate: the same
    command retried raises the same ids, so the store records it once."""
    return stable_event_id(aggregate_type, aggregate_id, "command", command_id, str(index))


class Aggregate:
    """Base of event-sourced aggregates.

    Subclasses set `aggregate_type`, register handlers with `@applies`, and implement
    `snapshot_state` / `restore_state` for snapshots. Bump `schema_version` whenever the
    snapshot state's shape changes: snapshots of another schema version are ignored.
    """

    aggregate_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    strict: ClassVar[bool] = False
    """When true, replaying an event type with no handler is an error, not a warning."""

    _handlers: ClassVar[dict[str, Handler]] = {}
    _warned: ClassVar[set[tuple[type, str]]] = set()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, Handler] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                event_type = getattr(value, _HANDLES, None)
                if event_type is not None:
                    handlers[event_type] = value
        cls._handlers = handlers

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._uncommitted: list[NewEvent] = []
        self._command_id: str | None = None
        self._command_raised = 0
        self._metadata: Mapping[str, Any] = {}

    # ---- command side -----------------------------------------------------------

    def begin_command(
        self, *, command_id: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Say what the events of the next command carry, before it raises them.

        `command_id` (e.g. from an Idempotency-Key) derives their ids (`command_event_id`), so
        a retried command is recorded once. `metadata` (who, where, correlation) is merged into
        each event as it is raised: its handler then sees what replay will see.
        """
        self._command_id = command_id
        self._command_raised = 0
        self._metadata = dict(metadata or {})

    def raise_event(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        event_version: str = DEFAULT_EVENT_VERSION,
        metadata: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> NewEvent:
        """Apply a new event now and keep it to be saved.

        Give `event_id` (see `stable_event_id`) when the event must be recorded at most once;
        without it, a command begun with a `command_id` derives one. The event's metadata is
        the command's, then `metadata`, then its time under "timestamp", as the store records.
        """
        if event_id is None and self._command_id is not None:
            event_id = command_event_id(
                self.aggregate_type, self.id, self._command_id, self._command_raised
            )
        self._command_raised += 1
        timestamp = utc_now()
        event = NewEvent(
            event_type=event_type,
            data=data,
            event_version=event_version,
            metadata={**self._metadata, **(metadata or {}), TIMESTAMP: timestamp},
            event_id=event_id or new_event_id(),
            timestamp=timestamp,
        )
        self._dispatch(event)
        self.version += 1
        self._uncommitted.append(event)
        return event

    @property
    def uncommitted_events(self) -> list[NewEvent]:
        return list(self._uncommitted)

    @property
    def loaded_version(self) -> int:
        """The version the aggregate had in the store when it was loaded."""
        return self.version - len(self._uncommitted)

    @property
    def exists(self) -> bool:
        return self.version > 0

    def mark_committed(self) -> None:
        self._uncommitted.clear()

    # ---- replay -----------------------------------------------------------------

    def apply(self, event: RecordedEvent) -> None:
        """Replay one recorded event."""
        if event.aggregate_version != self.version + 1:
            raise ValueError(
                f"{self.aggregate_type}/{self.id}: event version {event.aggregate_version} "
                f"does not follow {self.version}"
            )
        self._dispatch(event)
        self.version = event.aggregate_version

    def _dispatch(self, event: EventLike) -> None:
        handler = self._handlers.get(event.event_type)
        if handler is not None:
            handler(self, event)
            return
        if self.strict:
            raise UnknownEventTypeError(
                f"{type(self).__name__} has no handler for {event.event_type}"
            )
        key = (type(self), event.event_type)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "%s has no handler for %s: skipped (warned once)",
                type(self).__name__,
                event.event_type,
            )

    # ---- snapshots --------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """The state to store in a snapshot (BSON-encodable, Decimal for money)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Set the state back from `snapshot_state`'s output."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        aggregate = cls(aggregate_id)
        aggregate.restore_state(state)
        aggregate.version = version
        return aggregate
