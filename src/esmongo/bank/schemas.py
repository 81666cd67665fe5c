"""JSON Schemas of the account events (the seed's catalog, with amounts that must be > 0)."""

from __future__ import annotations

from typing import Any

from esmongo.bank.account import CURRENCIES
from esmongo.schema import EventSchema

READ_MODELS = ("accounts_read", "transactions_read", "analytics_hourly")

_CURRENCY = {"type": "string", "enum": list(CURRENCIES)}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
_OPTIONAL_TEXT = {"type": ["string", "null"], "maxLength": 500}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


_MOVEMENT = _object(
    ["amount", "currency", "transactionId", "balanceAfter"],
    {
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "currency": _CURRENCY,
        "transactionId": _TEXT,
        "reason": _OPTIONAL_TEXT,
        "balanceAfter": {"type": "number"},
        "transferId": _TEXT,
        "counterpartyAccountId": _TEXT,
    },
)

ACCOUNT_SCHEMAS = [
    EventSchema(
        "account.created",
        "1.0",
        _object(
            ["ownerId", "ownerName", "currency"],
            {
                "ownerId": _TEXT,
                # The owner's name is theirs to have forgotten: encrypted with the key of
                # the user ownerId names (esmongo.store.personal).
                "ownerName": {**_TEXT, "x-personal": {"subject": "ownerId"}},
                "currency": _CURRENCY,
            },
        ),
        description="An account was opened (pending until activated)",
        projections=("accounts_read",),
    ),
    EventSchema(
        "account.activated",
        "1.0",
        _object([], {}),
        description="An account was activated",
        projections=("accounts_read",),
    ),
    EventSchema(
        "account.credited",
        "1.0",
        _MOVEMENT,
        description="Account was credited with funds",
        projections=READ_MODELS,
    ),
    EventSchema(
        "account.debited",
        "1.0",
        _MOVEMENT,
        description="Funds were taken out of an account",
        projections=READ_MODELS,
    ),
    EventSchema(
        "account.frozen",
        "1.0",
        _object(["reason"], {"reason": _OPTIONAL_TEXT}),
        description="An active account was frozen",
        projections=("accounts_read",),
    ),
    EventSchema(
        "account.unfrozen",
        "1.0",
        _object([], {}),
        description="A frozen account was made active again",
        projections=("accounts_read",),
    ),
    EventSchema(
        "account.closed",
        "1.0",
        _object([], {"reason": _OPTIONAL_TEXT}),
        description="An account with a zero balance was closed",
        projections=("accounts_read",),
    ),
]
