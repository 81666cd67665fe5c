"""What a projection running from zero into empty collections has created so far: there an
update of a document that does not exist yet becomes part of one insert of the new
document (esmongo.projections.writes explains when this mode applies)."""

from __future__ import annotations

from collections.abc import Collection

from pymongo import InsertOne

from esmongo.projections.keys import Key, match_key
from esmongo.projections.writes import BulkOp, PendingUpdate

FRESH_KEYS = 1_000_000
"""Documents a from-zero run remembers having created; past that it merges as usual."""
_PROVABLE = frozenset({"bool", "number", "string", "date", "objectId"})


class FreshCollections:
    """What a projection running from zero into empty collections has created so far.

    Per collection: the keys of the documents its upserts may have created (all of them,
    committed or not: a key wrongly held as created only costs an update), and the one set
    of key fields its updates use. A collection whose batches also insert or delete, or
    whose updates use other key fields or null/array/object values, leaves this mode for
    good: which documents exist is then no longer known.
    """

    def __init__(self, empty: Collection[str], capacity: int = FRESH_KEYS) -> None:
        self.empty = frozenset(empty)
        """The collections found empty at the start: no other is ever treated as fresh."""
        self.capacity = capacity
        self.created: dict[str, set[Key]] = {}
        self.fields: dict[str, frozenset[str]] = {}
        self.mixed: set[str] = set()
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def split(self, collection: str, ops: list[PendingUpdate | BulkOp]) -> list[BulkOp] | None:
        """The collection's operations with new documents inserted first, or None when
        this collection cannot be told apart (then every key of it counts as created)."""
        if collection in self.mixed or collection not in self.empty or self.full:
            return None
        pending = [op for op in ops if isinstance(op, PendingUpdate)]
        shapes = {frozenset(op.key) for op in pending}
        known = self.fields.setdefault(collection, next(iter(shapes), frozenset()))
        provable = all(
            tag[0] in _PROVABLE
            for op in pending
            for _, tag in match_key(op.key)
            if isinstance(tag, tuple)
        )
        if len(pending) != len(ops) or shapes - {known} or not provable:
            self.mixed.add(collection)
            return None
        created = self.created.setdefault(collection, set())
        inserts: list[BulkOp] = []
        updates: list[BulkOp] = []
        for op in pending:
            key = match_key(op.key)
            if key in created:
                update = op.to_operation()
                if update is not None:
                    updates.append(update)
            elif op.upsert:  # a missing document, which this upsert creates
                inserts.append(InsertOne(op.to_document()))
                created.add(key)
                self.size += 1
            # else: an update of a missing document without upsert matches nothing
        return inserts + updates
