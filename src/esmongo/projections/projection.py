"""What a projection is: a name, the event types it handles, and a handler per type.

A handler turns one event into read-model writes (`Update`, `Insert`, `Delete`); it does
no I/O of its own on the read model, so the runner can merge a batch's writes and commit
them with the checkpoint in one transaction. Handlers may be sync or async (an async one
may look things up elsewhere; it is retried with backoff when it fails).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from pymongo import IndexModel

from esmongo.events import RecordedEvent
from esmongo.projections.writes import Delete, Insert, Update, Write

HandlerResult = Write | Iterable[Write] | None
Handler = Callable[[RecordedEvent], HandlerResult | Awaitable[HandlerResult]]
F = TypeVar("F", bound=Callable[..., Any])
_HANDLES = "__esmongo_projection_handles__"


class Lifecycle(StrEnum):
    """When a projection's writes happen."""

    ASYNC = "async"
    """By the runner, after the events commit (the default): the read model lags a little."""
    INLINE = "inline"
    """In the transaction of the events themselves (esmongo.projections.inline): a read
    after the append sees them; a failing handler fails the append."""


class FailurePolicy(StrEnum):
    """What a projection does with an event its handler keeps failing on."""

    SKIP = "skip"
    """Record a dead letter and go on: right for read models whose updates commute."""
    STOP = "stop"
    """Record a dead letter and stop before the event: right when order matters."""


def handles(*event_types: str) -> Callable[[F], F]:
    """Mark a method as the handler of one or more event types."""
    if not event_types:
        raise ValueError("handles() needs at least one event type")

    def mark(fn: F) -> F:
        setattr(fn, _HANDLES, event_types)
        return fn

    return mark


class Projection:
    """Base of projections. Subclasses set `name` and `collections` and mark handlers.

    `collections` maps each read-model collection the projection writes to its indexes;
    writes may only go to these (a rebuild redirects them to new collections by name).
    """

    name: str = ""
    collections: Mapping[str, Sequence[IndexModel]] = {}
    policy: FailurePolicy = FailurePolicy.SKIP
    lifecycle: Lifecycle = Lifecycle.ASYNC
    """INLINE: applied in the append's transaction once its runner has caught up."""
    max_attempts: int = 3
    """Calls of a failing handler before its event becomes a dead letter."""
    retry_backoff_s: float = 0.05
    """First pause between attempts; doubled after each failure."""

    def __init__(self) -> None:
        if not self.name:
            raise ValueError(f"{type(self).__name__} must set a projection name")
        self._handlers: dict[str, Handler] = {}
        for klass in reversed(type(self).__mro__):
            for attr, value in vars(klass).items():
                for event_type in getattr(value, _HANDLES, ()):
                    self._handlers[event_type] = getattr(self, attr)

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def handler_for(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    async def apply(self, event: RecordedEvent) -> list[Write]:
        """The writes one event makes. Raises whatever the handler raises."""
        handler = self._handlers.get(event.event_type)
        if handler is None:
            return []
        result = handler(event)
        if inspect.isawaitable(result):
            result = await result
        writes = _as_writes(result)
        for write in writes:
            if write.collection not in self.collections:
                raise ValueError(
                    f"projection {self.name} wrote to {write.collection!r}, which is not one "
                    f"of its declared collections {sorted(self.collections)}"
                )
        return writes

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _as_writes(result: object) -> list[Write]:
    if result is None:
        return []
    if isinstance(result, Update | Insert | Delete):
        return [result]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | Mapping):
        writes = list(result)
        for write in writes:
            if not isinstance(write, Update | Insert | Delete):
                raise TypeError(f"a projection handler returned {write!r}, not a write")
        return writes
    raise TypeError(f"a projection handler returned {result!r}, not writes")
