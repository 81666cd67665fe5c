"""An update's key as MongoDB matches it, and which keys may match the same document.

Merging a batch folds a later update of a document into an earlier one. That is right only
when both keys match the same document, and when no write in between may match it too.
MongoDB ANDs a filter's top-level fields, so their order does not matter (`{k, t}` and
`{t, k}` are one key). It compares numbers by value whatever their type, dates to the
millisecond (naive ones as UTC), and an embedded document as a whole, field order included.

A key is an equality filter on fields that hold one value (not an array) in the read
model: a document whose key field is an array would match several different keys.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Hashable, Mapping
from decimal import Decimal
from math import isnan
from typing import Any, Generic, TypeVar

from bson import Decimal128, ObjectId
from bson.datetime_ms import DatetimeMS

Key = tuple[tuple[str, Hashable], ...]
"""(field, canonical value) pairs, sorted by field."""
Shape = tuple[str, ...]
T = TypeVar("T")

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MS = _dt.timedelta(milliseconds=1)
_SCALARS = frozenset({"bool", "number", "string", "date", "null", "objectId"})
"""Tags of values that prove two keys apart when they differ: a field holds one of them."""


def check_key(key: Mapping[str, Any], *, what: str) -> None:
    """Refuse what is not an equality filter, naming it (a handler's bug, dead-lettered)."""
    if not isinstance(key, Mapping) or not key:
        raise ValueError(f"{what}: the key must be a non-empty mapping of fields, not {key!r}")
    for name, value in key.items():
        if not isinstance(name, str) or name.startswith("$"):
            raise ValueError(f"{what}: key field {name!r} is not a field name (no operators)")
        if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
            raise ValueError(
                f"{what}: key field {name!r} holds the operator expression {dict(value)!r}; "
                "a key is an equality filter"
            )


def match_key(key: Mapping[str, Any]) -> Key:
    """The key in a form where two keys are equal exactly when MongoDB matches them alike."""
    return tuple(sorted((str(name), _canonical(value)) for name, value in key.items()))


def _canonical(value: Any) -> Hashable:
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, int | float | Decimal):  # Int64 is an int
        if _is_nan(value):
            return ("nan",)  # NaN matches NaN in a filter; never a proof of difference
        return ("number", value)  # 1 == 1.0 == Decimal("1.00"), with equal hashes
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, DatetimeMS):
        return ("date", int(value))
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        return ("date", (aware - _EPOCH) // _MS)
    if isinstance(value, ObjectId):
        return ("objectId", value)
    if isinstance(value, Mapping):
        return ("object", tuple((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("array", tuple(_canonical(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("other", type(value).__qualname__, repr(value))
    return ("other", type(value).__qualname__, value)


def _is_nan(value: float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_nan()
    return isinstance(value, float) and isnan(value)


def _tag(value: Hashable) -> str:
    return value[0] if isinstance(value, tuple) else ""


def _all_scalar(key: Key) -> bool:
    return all(_tag(value) in _SCALARS for _, value in key)


def may_overlap(a: Key, b: Key) -> bool:
    """False only when no document can match both: a shared field, two different scalars."""
    values = dict(a)
    for name, value in b:
        mine = values.get(name)
        if mine is None or mine == value:
            continue
        if _tag(mine) in _SCALARS and _tag(value) in _SCALARS:
            return False
    return True


class OpenKeys(Generic[T]):
    """The pending updates (by key) that later updates of a batch may still fold into.

    Opening a key closes every open key that may match the same document, so no later
    update is folded past a write it must follow. Keys of one shape (the same fields) whose
    values are all scalars are told apart without comparing them one by one.
    """

    def __init__(self) -> None:
        self._shapes: dict[Shape, dict[Key, T]] = {}
        self._loose: dict[Shape, set[Key]] = {}
        """Per shape, the keys with a value that proves nothing (array, document, NaN)."""

    def get(self, key: Key) -> T | None:
        return self._shapes.get(_shape(key), {}).get(key)

    def open(self, key: Key, pending: T) -> None:
        shape = _shape(key)
        same = self._shapes.setdefault(shape, {})
        loose = self._loose.setdefault(shape, set())
        if key in same:
            same[key] = pending  # the same document: the newer update takes over
            return
        if _all_scalar(key):
            overlapping = [k for k in loose if may_overlap(k, key)]
        else:
            overlapping = [k for k in same if may_overlap(k, key)]
        for other in overlapping:
            del same[other]
            loose.discard(other)
        for other_shape, keys in self._shapes.items():
            if other_shape != shape:
                for other in [k for k in keys if may_overlap(k, key)]:
                    del keys[other]
                    self._loose[other_shape].discard(other)
        same[key] = pending
        if not _all_scalar(key):
            loose.add(key)

    def clear(self) -> None:
        self._shapes.clear()
        self._loose.clear()


def _shape(key: Key) -> Shape:
    return tuple(name for name, _ in key)
