"""The causation tree of a correlation: which event caused which, across streams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from esmongo.events import RecordedEvent


@dataclass
class Node:
    """An event (or, with `event` None, a cause outside the store: a request or command)."""

    label: str
    event: RecordedEvent | None = None
    children: list[Node] = field(default_factory=list)


def causation_tree(events: Sequence[RecordedEvent]) -> list[Node]:
    """Roots in time order. An event whose `causationId` is another event's id hangs under
    it; events caused by the same outside id (a request, a command) hang under one node
    for it; events with no causation id are roots of their own."""
    nodes = {e.event_id: Node(e.event_type, e) for e in events}
    outside: dict[str, Node] = {}
    roots: list[Node] = []
    for event in sorted(events, key=lambda e: e.sequence):
        node = nodes[event.event_id]
        cause = event.metadata.get("causationId")
        if not isinstance(cause, str) or not cause or cause == event.event_id:
            roots.append(node)
        elif cause in nodes:
            nodes[cause].children.append(node)
        else:
            if cause not in outside:
                outside[cause] = Node(f"caused by {cause}")
                roots.append(outside[cause])
            outside[cause].children.append(node)
    return roots
