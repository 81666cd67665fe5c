"""The fast validity check (jsonschema-rs) never accepts what the reference (jsonschema)
refuses, so the registry answers as the reference alone would, only faster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esmongo.bank.schemas import ACCOUNT_SCHEMAS
from esmongo.schema import EventSchema, SchemaRegistry
from esmongo.schema.registry import compile_fast_check, compile_validator

TRICKY = EventSchema(
    "tricky.happened",
    "1.0",
    {
        "type": "object",
        "required": ["code"],
        "properties": {
            # Python's `$` also matches before a final newline; `\d` and `\w` are Unicode.
            "code": {"type": "string", "pattern": "^[a-z]+$"},
            "digits": {"type": "string", "pattern": r"^\d{2,4}$"},
            "word": {"type": "string", "pattern": r"^\w+$"},
            "count": {"type": "integer", "minimum": 0, "maximum": 10},
            "ratio": {"type": "number", "multipleOf": 0.5},
            "flag": {"enum": [0, 1, "yes"]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "nested": {"$ref": "#/$defs/nested"},
            "when": {"type": "string", "format": "date-time"},
        },
        "$defs": {"nested": {"type": "object", "properties": {"n": {"type": "number"}}}},
    },
)
SCHEMAS = [*ACCOUNT_SCHEMAS, TRICKY]

TEXT = st.sampled_from(
    ["", "a", "abc", "abc\n", "ABC", "12", "1234", "١٢٣", "é", "x y", "EUR", "GBP", "yes", "t"]
) | st.text(max_size=6)
NUMBERS = (
    st.integers(-3, 12)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-5, max_value=5)
    | st.booleans()
)
SCALARS = st.none() | TEXT | NUMBERS | st.just(datetime(2026, 1, 1, tzinfo=UTC))
NAMES = st.sampled_from(
    sorted({name for s in SCHEMAS for name in s.schema.get("properties", {})} | {"n", "zz"})
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=8,
)
DATA = st.dictionaries(NAMES, VALUES, max_size=8)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(schema=st.sampled_from(SCHEMAS), data=DATA)
def test_what_the_fast_check_accepts_the_reference_accepts(
    schema: EventSchema, data: dict[str, Any]
) -> None:
    fast = compile_fast_check(schema.schema)
    assert fast is not None
    reference = compile_validator(schema.schema)
    try:
        accepted = fast(data)
    except ValueError:
        accepted = False  # a value JSON has no type for: the registry asks the reference
    if accepted:
        assert list(reference.iter_errors(data)) == []
    registry = SchemaRegistry([schema])
    expected = sorted(e.json_path for e in reference.iter_errors(data))
    found = sorted(v.path for v in registry.violations(schema.event_type, schema.version, data))
    assert found == expected


def test_the_reference_decides_where_the_fast_check_is_stricter() -> None:
    """Python's `$` matches before a final newline and its `\\d` takes any digit: the fast
    check refuses both, the reference accepts them, and so does the registry."""
    registry = SchemaRegistry([TRICKY])
    fast = compile_fast_check(TRICKY.schema)
    assert fast is not None
    for data in ({"code": "abc\n"}, {"code": "abc", "digits": "١٢٣"}):
        assert fast(data) is False
        assert registry.violations("tricky.happened", "1.0", data) == []


def test_a_value_json_has_no_type_for_goes_to_the_reference() -> None:
    registry = SchemaRegistry([TRICKY])
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    (violation,) = registry.violations("tricky.happened", "1.0", {"code": moment})
    assert (violation.path, violation.rule) == ("$.code", "type")
    assert registry.violations("tricky.happened", "1.0", {"code": "a", "zz": moment}) == []


def test_money_as_decimal_is_checked_by_the_fast_path() -> None:
    registry = SchemaRegistry(ACCOUNT_SCHEMAS)
    good = {
        "amount": Decimal("0.01"),
        "currency": "EUR",
        "transactionId": "t1",
        "balanceAfter": Decimal("-3.50"),
    }
    assert registry.violations("account.credited", "1.0", good) == []
    (violation,) = registry.violations(
        "account.credited", "1.0", {**good, "amount": Decimal("0.00")}
    )
    assert (violation.path, violation.rule) == ("$.amount", "exclusiveMinimum")
