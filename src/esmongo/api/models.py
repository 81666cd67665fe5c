"""Request and response bodies. Money travels as decimal strings: JSON numbers become
floats in most clients and parsers, and floats lose cents."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from bson import ObjectId
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from esmongo import RecordedEvent

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
URL_DELIMITERS = "/?#%"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def account_id_problem(value: str) -> str | None:
    """Why `value` cannot be an account id, or None.

    An account id is a URL path segment (/accounts/{id}/...): it must travel as it is,
    without percent-encoding, and must not be a segment that clients and proxies rewrite.
    """
    if not value:
        return "must not be empty"
    if len(value) > 64:
        return f"must be at most 64 characters, not {len(value)}"
    if value in (".", ".."):
        return f"{value!r} is a relative path segment: clients and proxies resolve it away"
    for char in value:
        if char in ID_CHARACTERS:
            continue
        if char in URL_DELIMITERS:
            return f"{char!r} delimits a URL: a path cannot carry it as it is"
        if char.isspace():
            return f"whitespace ({char!r}) cannot travel in a URL path as it is"
        if not char.isprintable():
            return f"control character {char!r} cannot travel in a URL path"
        return f"{char!r} is not allowed: use letters, digits and _ . : - (ASCII)"
    return None


def _account_id(value: str) -> str:
    problem = account_id_problem(value)
    if problem is not None:
        raise ValueError(f"account id {problem}")
    return value


AccountIdentifier = Annotated[
    str,
    AfterValidator(_account_id),
    Field(
        json_schema_extra={"pattern": ID_PATTERN, "minLength": 1, "maxLength": 64},
        description="Letters, digits and _ . : - (at most 64); not '.' or '..'.",
    ),
]
Amount = Annotated[
    str,
    StringConstraints(pattern=r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$"),
    Field(
        description='A decimal string with at most two decimals, e.g. "10.50". '
        "JSON numbers are refused: they lose precision.",
        examples=["10.50"],
    ),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Currency = Literal["USD", "EUR", "GBP"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateAccountBody(Body):
    accountId: AccountIdentifier | None = Field(None, description="Generated when omitted.")
    ownerId: Identifier | None = Field(None, description="Customers open accounts for themselves.")
    ownerName: Text | None = None
    currency: Currency = "USD"


class MoneyBody(Body):
    amount: Amount
    transactionId: Identifier | None = Field(
        None, description="Makes the movement idempotent: the same id moves money once."
    )
    reason: Text | None = None


class FreezeBody(Body):
    reason: Text


class CloseBody(Body):
    reason: Text | None = None


class ArchiveOut(BaseModel):
    """An archived account stream: its events moved to `events_archive`, still readable."""

    accountId: str
    version: int
    events: int
    firstSequence: int
    lastSequence: int
    archivedAt: datetime
    snapshotKept: bool
    alreadyArchived: bool


class TransferBody(Body):
    fromAccountId: Identifier
    toAccountId: Identifier
    amount: Amount
    transferId: Identifier | None = None
    reason: Text | None = None


class CommandOut(BaseModel):
    accountId: str
    version: int
    eventIds: list[str]
    sequence: int = Field(description="Global position of the last event written.")
    alreadyApplied: bool = False


class TransferOut(BaseModel):
    transferId: str
    fromAccountId: str
    toAccountId: str
    amount: str
    eventIds: list[str]
    sequence: int
    alreadyApplied: bool = False


class EventOut(BaseModel):
    eventId: str
    eventType: str
    eventVersion: str
    aggregateType: str
    aggregateId: str
    aggregateVersion: int
    sequence: int
    timestamp: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, event: RecordedEvent) -> EventOut:
        return cls(
            eventId=event.event_id,
            eventType=event.event_type,
            eventVersion=event.event_version,
            aggregateType=event.aggregate_type,
            aggregateId=event.aggregate_id,
            aggregateVersion=event.aggregate_version,
            sequence=event.sequence,
            timestamp=event.timestamp,
            data=plain(event.data),
            metadata=plain(event.metadata),
        )


class HistoryOut(BaseModel):
    accountId: str
    events: list[EventOut]
    nextFromVersion: int | None = Field(description="Pass as from_version for the next page.")


class EventsOut(BaseModel):
    events: list[EventOut]
    nextAfterSequence: int | None = Field(description="Pass as after_sequence for the next page.")


class Page(BaseModel):
    items: list[dict[str, Any]]
    nextAfter: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


def plain(value: Any) -> Any:
    """BSON-ish values as JSON: Decimal as string (exact), datetimes ISO 8601, ids as str."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "_id"}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (401, 403, 404, 409, 413, 422)
}
