"""Query values checked against what MongoDB can store, so bad input is a 422, not a 500.

FastAPI checks types and bounds; these check what only the database would refuse later
(a decimal Decimal128 cannot hold, a time BSON cannot encode), and name the parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, DecimalException

from bson.decimal128 import Decimal128

from esmongo.api.errors import ApiError

# datetime's own range, less a day so that adding the time zone cannot overflow it.
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, tzinfo=UTC)


def decimal_param(value: str | None, name: str) -> Decimal | None:
    """A decimal string that Decimal128 holds exactly (finite, 34 digits, exponent in range)."""
    if value is None:
        return None
    try:
        parsed = Decimal(value)
    except DecimalException:
        raise ApiError(422, "invalid_request", f"{name} must be a decimal string") from None
    if not parsed.is_finite():
        raise ApiError(422, "invalid_request", f"{name} must be a finite decimal")
    try:
        Decimal128(parsed)  # raises on overflow and on any rounding (Inexact)
    except DecimalException:
        raise ApiError(
            422,
            "invalid_request",
            f"{name} is out of range: a decimal of at most 34 digits "
            "with an exponent from -6176 to 6111",
        ) from None
    return parsed


def utc_param(moment: datetime | None, name: str) -> datetime | None:
    """Naive times are taken as UTC; times outside BSON's practical range are refused."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if not EARLIEST <= aware <= LATEST:
        raise ApiError(422, "invalid_request", f"{name} must be between 1970 and 9998")
    return aware.astimezone(UTC)
