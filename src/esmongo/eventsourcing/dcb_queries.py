"""The queries of the DCB recorder: a DCBQuery as index scans of a range of positions.

An event matches a query item when its type is one of the item's types (or the item has
none) and it carries every tag of the item; it matches a query when it matches one of its
items (or the query has none). MongoDB would take that as one `$or` of `$all`s; the
embedded server scans the collection for any filter that is not a prefix of one index
(docs/mongodb.md). So each item is read as plain filters, each served by an index:
- with tags: `{data.tags: <its first tag>, sequence: range}` on `dcb_tags` (multikey), the
  item's other tags and its types checked here on each document found;
- with types only: `{eventType: <type>, sequence: range}` on `dcb_types`, one per type;
- with neither: every position of the range, which needs no query at all: positions are
  gap-free, so the range [low, high] holds exactly the events low..high.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventsourcing.dcb.api import DCBQuery
from pymongo import ASCENDING, IndexModel

TAGS = "tags"
"""The field of `data` that holds an event's tags."""

DCB_INDEXES = [
    IndexModel([("data.tags", ASCENDING), ("sequence", ASCENDING)], name="dcb_tags"),
    IndexModel([("eventType", ASCENDING), ("sequence", ASCENDING)], name="dcb_types"),
]
"""Besides esmongo's event indexes, on a DCB application's events collection."""


@dataclass(frozen=True)
class Scan:
    """One indexed query of a range of positions, and what its documents must also have."""

    filter: dict[str, Any]
    tags: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    @property
    def exact(self) -> bool:
        """Every document the filter finds matches (the server may apply a limit)."""
        return not self.tags and not self.types

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if self.types and doc["eventType"] not in self.types:
            return False
        return self.tags.issubset(doc["data"][TAGS])


def scans(query: DCBQuery | None, low: int, high: int) -> list[Scan] | None:
    """The scans that find the events of positions low..high matching `query`; None when
    every event of the range matches (no query needed: the range is exact)."""
    if query is None or not query.items:
        return None
    positions = {"$gte": low, "$lte": high}
    found: dict[str, Scan] = {}
    for item in query.items:
        if item.tags:
            first, *others = item.tags
            scan = Scan(
                {"data.tags": first, "sequence": positions},
                frozenset(others),
                frozenset(item.types),
            )
            found.setdefault(repr(scan), scan)
        elif item.types:
            for event_type in item.types:
                scan = Scan({"eventType": event_type, "sequence": positions})
                found.setdefault(repr(scan), scan)
        else:
            return None
    return list(found.values())


FIELDS = {"eventType": 1, "data": 1, "sequence": 1}
"""What a read needs of each document."""
