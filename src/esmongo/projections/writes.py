"""Read-model writes that a handler returns, and how a batch of them becomes bulk writes.

Handlers describe what an event changes (`Update`, `Insert`, `Delete`) instead of doing
I/O. The runner can then merge a batch: twenty credits to one account become one update
($inc amounts summed, the last $set kept), and each collection gets one `bulk_write`.
Merging never changes the result: an update that cannot be folded into the previous one
for the same document (conflicting paths, operators whose combination depends on the
stored value) starts a new operation, an update is never folded past a write that may
touch the same document (esmongo.projections.keys), and ordered bulk writes keep the
per-document order.

A projection that starts from zero into empty collections (a rebuild, a first run) knows
which documents exist: only those its own upserts created, as it holds the lease. There an
update of a document that does not exist yet is folded in memory into the document the
upsert would create, and written with the batch's other new documents by one insert
(esmongo.projections.fresh); an update without upsert of a missing document is dropped (it would
match nothing). Documents that exist still get their merged update. Live batches do not
do this: their documents mostly exist, and others may write them (ADR 0013).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.projections.keys import OpenKeys, check_key, match_key

BulkOp = InsertOne[Document] | UpdateOne | DeleteOne


@dataclass(frozen=True)
class Update:
    """Update the one document of `collection` that matches `key` (an equality filter).

    The fields map dotted paths to values, one per MongoDB operator. `upsert` creates the
    document (with the key's fields) when it does not exist yet.
    """

    collection: str
    key: Mapping[str, Any]
    set: Mapping[str, Any] = field(default_factory=dict)
    inc: Mapping[str, Any] = field(default_factory=dict)
    max: Mapping[str, Any] = field(default_factory=dict)
    min: Mapping[str, Any] = field(default_factory=dict)
    set_on_insert: Mapping[str, Any] = field(default_factory=dict)
    unset: Collection[str] = ()
    upsert: bool = True

    def __post_init__(self) -> None:
        check_key(self.key, what=f"Update of {self.collection}")


@dataclass(frozen=True)
class Insert:
    """Insert one document (give it a deterministic `_id` so a rebuild yields the same)."""

    collection: str
    document: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    """Delete the one document of `collection` that matches `key`."""

    collection: str
    key: Mapping[str, Any]

    def __post_init__(self) -> None:
        check_key(self.key, what=f"Delete from {self.collection}")


Write = Update | Insert | Delete


class _Merge(Exception):
    """The next update cannot be folded into the pending one."""


_NUMBERS = (int, float, Decimal)
_DECIMAL128 = decimal.Context(prec=34)


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        return True
    return type(a) is type(b) and isinstance(a, _dt.datetime | str)


def _extreme(a: Any, b: Any, pick_max: bool) -> Any:
    """What $max/$min leaves after both values, when it does not depend on BSON subtleties."""
    if a is None:
        return b if pick_max else a
    if b is None:
        return a if pick_max else b
    if not _same_kind(a, b):
        raise _Merge
    try:
        return max(a, b) if pick_max else min(a, b)
    except TypeError:  # naive and aware datetimes
        raise _Merge from None


def _add(a: Any, b: Any) -> Any:
    """a + b as the server would compute it; floats are not folded (rounding order)."""
    if isinstance(a, bool) or isinstance(b, bool):
        raise _Merge
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, int | Decimal) and isinstance(b, int | Decimal):
        return _DECIMAL128.add(Decimal(a), Decimal(b))
    raise _Merge


class PendingUpdate:
    """An update being accumulated for one document."""

    def __init__(self, update: Update) -> None:
        self.collection = update.collection
        self.key = dict(update.key)
        self.upsert = update.upsert
        self.set: Document = {}
        self.inc: Document = {}
        self.max: Document = {}
        self.min: Document = {}
        self.set_on_insert: Document = dict(update.set_on_insert)
        self.unset: set[str] = set()
        self._layout: tuple[dict[str, str], set[str]] | None = None
        """Path -> operator, and every proper prefix of those paths: kept between folds
        while no path changes operator (a catch-up folds thousands of the same shape)."""
        self.fold(update)

    def _paths(self) -> dict[str, str]:
        paths = {}
        for op, values in (
            ("set", self.set),
            ("inc", self.inc),
            ("max", self.max),
            ("min", self.min),
            ("soi", self.set_on_insert),
        ):
            for path in values:
                paths[path] = op
        for path in self.unset:
            paths[path] = "unset"
        return paths

    def fold(self, update: Update) -> None:
        """Fold `update` in, or raise _Merge and leave this one unchanged.

        A folded update's `set_on_insert` is dropped: after the first update of this
        document (an upsert, or a no-op on a missing one) it could never take effect.
        Everything that can refuse is decided before anything changes (no copy: a
        catch-up folds thousands of updates).
        """
        if update.upsert and not self.upsert:
            raise _Merge
        u = update
        incoming = [*u.set, *u.inc, *u.max, *u.min, *u.unset]
        if len(set(incoming)) != len(incoming):
            raise _Merge  # one path under two operators of the same update
        if self._layout is None:
            paths = self._paths()
            self._layout = paths, {p for q in paths for p in _proper_prefixes(q)}
        existing, prefixes = self._layout
        # Two different paths conflict when one is a proper prefix of the other.
        for path in incoming:
            if path in prefixes or any(p in existing for p in _proper_prefixes(path)):
                raise _Merge
        # The paths of `u` are distinct, so its $set and $unset do not touch the values
        # its $inc, $max and $min fold into: compute those first, then apply.
        folded: list[tuple[Document, str, Any]] = []
        for path, value in u.inc.items():
            folded.append(self._fold_inc(existing.get(path), path, value))
        for path, value in u.max.items():
            folded.append(self._fold_extreme(existing.get(path), path, value, pick_max=True))
        for path, value in u.min.items():
            folded.append(self._fold_extreme(existing.get(path), path, value, pick_max=False))
        for path, value in u.set.items():
            self._drop(path)
            self.set[path] = value
        for path in u.unset:
            self._drop(path)
            self.unset.add(path)
        for values, path, value in folded:
            values[path] = value
        if self._moved(existing, u):
            self._layout = None

    def _moved(self, existing: Mapping[str, str], u: Update) -> bool:
        """Whether folding `u` gave any path another operator (or a new path)."""
        for op, paths in (("set", u.set), ("unset", u.unset)):
            if any(existing.get(path) != op for path in paths):
                return True
        for op, own, paths in (
            ("inc", self.inc, u.inc),
            ("max", self.max, u.max),
            ("min", self.min, u.min),
        ):
            for path in paths:
                if existing.get(path) != (op if path in own else "set"):
                    return True
        return False

    def _drop(self, path: str) -> None:
        for values in (self.set, self.inc, self.max, self.min, self.set_on_insert):
            values.pop(path, None)
        self.unset.discard(path)

    def _fold_inc(self, was: str | None, path: str, value: Any) -> tuple[Document, str, Any]:
        if was is None:
            return self.inc, path, value
        if was == "inc":
            return self.inc, path, _add(self.inc[path], value)
        if was == "set" and self.set[path] is not None:
            return self.set, path, _add(self.set[path], value)
        raise _Merge

    def _fold_extreme(
        self, was: str | None, path: str, value: Any, *, pick_max: bool
    ) -> tuple[Document, str, Any]:
        mine = self.max if pick_max else self.min
        if was is None:
            return mine, path, value
        if was == ("max" if pick_max else "min"):
            return mine, path, _extreme(mine[path], value, pick_max)
        if was == "set":
            return self.set, path, _extreme(self.set[path], value, pick_max)
        raise _Merge

    def to_document(self) -> Document:
        """The document this update creates when it upserts a missing one (no `_id`: the
        driver gives one, as the server would). Folded updates apply as MongoDB would
        apply them in turn to what the first one created: an `$inc` or `$max` of a missing
        field sets it; `$setOnInsert` applies."""
        document: Document = {}
        for values in (self.key, self.set_on_insert, self.set, self.inc, self.max, self.min):
            for path, value in values.items():
                _put(document, path, value)
        return document

    def to_operation(self) -> UpdateOne | None:
        update: Document = {}
        for op, values in (
            ("$set", self.set),
            ("$inc", self.inc),
            ("$max", self.max),
            ("$min", self.min),
            ("$setOnInsert", self.set_on_insert),
        ):
            if values:
                update[op] = values
        if self.unset:
            update["$unset"] = {path: "" for path in sorted(self.unset)}
        if not update:
            return None
        return UpdateOne(self.key, update, upsert=self.upsert)


@functools.lru_cache(maxsize=4096)
def _proper_prefixes(path: str) -> tuple[str, ...]:
    """ "a" and "a.b" for "a.b.c"."""
    return tuple(path[:i] for i, c in enumerate(path) if c == ".")


def _put(document: Document, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for name in parents:
        document = document.setdefault(name, {})
    document[last] = value


class NewDocuments(Protocol):
    """Tells the documents a from-zero run creates from those that exist
    (esmongo.projections.fresh.FreshCollections)."""

    def split(self, collection: str, ops: list[PendingUpdate | BulkOp]) -> list[BulkOp] | None:
        """The collection's operations, new documents inserted first; None: cannot tell."""
        ...


class WritePlan:
    """The merged writes of one batch, in an order that gives the same result."""

    def __init__(self) -> None:
        self._ops: dict[str, list[PendingUpdate | BulkOp]] = {}
        self._open: dict[str, OpenKeys[PendingUpdate]] = {}
        self.writes = 0
        """How many writes the handlers returned (before merging)."""

    def add(self, write: Write) -> None:
        self.writes += 1
        ops = self._ops.setdefault(write.collection, [])
        open_updates = self._open.setdefault(write.collection, OpenKeys())
        if isinstance(write, Update):
            key = match_key(write.key)
            pending = open_updates.get(key)
            if pending is not None:
                try:
                    pending.fold(write)
                    return
                except _Merge:
                    pass
            pending = PendingUpdate(write)
            open_updates.open(key, pending)
            ops.append(pending)
            return
        # An insert or delete may touch a document a pending update also matches:
        # later updates of this collection must not be moved before it.
        open_updates.clear()
        if isinstance(write, Insert):
            ops.append(InsertOne(dict(write.document)))
        else:
            ops.append(DeleteOne(dict(write.key)))

    def extend(self, writes: Iterable[Write]) -> None:
        for write in writes:
            self.add(write)

    def operations(self, fresh: NewDocuments | None = None) -> dict[str, list[BulkOp]]:
        """Collection name -> bulk operations, in order. With `fresh`, documents that do
        not exist yet are inserted (esmongo.projections.fresh)."""
        result: dict[str, list[BulkOp]] = {}
        for collection, ops in self._ops.items():
            split = fresh.split(collection, ops) if fresh is not None else None
            if split is not None:
                if split:
                    result[collection] = split
                continue
            bulk: list[BulkOp] = []
            for op in ops:
                if isinstance(op, PendingUpdate):
                    update = op.to_operation()
                    if update is not None:
                        bulk.append(update)
                else:
                    bulk.append(op)
            if bulk:
                result[collection] = bulk
        return result

    def __len__(self) -> int:
        return sum(len(ops) for ops in self._ops.values())


async def execute(
    session: AsyncClientSession,
    db: AsyncDatabase[Document],
    plan: WritePlan,
    targets: Mapping[str, str] | None = None,
    fresh: NewDocuments | None = None,
) -> int:
    """Run a plan in `session`'s transaction: one ordered bulk_write per collection.

    `targets` maps a projection's collection names to the collections written (a
    rebuild writes to new ones). `fresh`: see esmongo.projections.fresh. Returns the number of
    bulk operations sent.
    """
    sent = 0
    for name, ops in plan.operations(fresh).items():
        target = (targets or {}).get(name, name)
        collection = db.get_collection(target, codec_options=CODEC_OPTIONS)
        await collection.bulk_write(ops, ordered=True, session=session)
        sent += len(ops)
    return sent
