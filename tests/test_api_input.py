"""Hostile input to the HTTP API: numbers MongoDB cannot hold, ids a URL path cannot carry,
oversized bodies. Each is a 4xx that says what is wrong, never a 500 or a stall."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client


@pytest.fixture
async def api(db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Api]:
    async with api_client(db) as client:
        yield client


# --- item 15: numbers Decimal128 cannot hold exactly -------------------------------------

UNREPRESENTABLE = ["1e9999", "1e-9999", "-1e9999", "1E+6145", "1E-6177", "NaN", "Infinity"]


@pytest.mark.parametrize("param", ["min_balance", "max_balance"])
@pytest.mark.parametrize("value", [*UNREPRESENTABLE, "-Infinity", "sNaN", "12e", "0x10"])
async def test_balance_bounds_decimal128_cannot_hold_are_422(
    api: Api, param: str, value: str
) -> None:
    r = await api.get("/accounts", params={param: value})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert param in error["message"]


async def test_balance_bounds_at_decimal128_limits_still_work(api: Api) -> None:
    await api.open_account("rich", funds="100.00")
    for low, high, found in [("1E+6144", None, 0), ("-1E+6144", "1E+6144", 1), ("-0", None, 1)]:
        params = {"min_balance": low} | ({"max_balance": high} if high else {})
        r = await api.get("/accounts", params=params)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) <= found  # the read model may lag; never a 5xx


@pytest.mark.parametrize("param", ["from", "to"])
@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e9999", "-1e9999"]
)
async def test_event_time_window_out_of_range_is_422(api: Api, param: str, value: str) -> None:
    r = await api.get("/events", params={param: value})
    assert r.status_code == 422, r.text
    assert param in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/accounts/x/history", {"from_version": "1e9999"}),
        ("/accounts/x/history", {"from_version": str(2**64)}),
        ("/events", {"after_sequence": str(2**63)}),
        ("/events", {"after_sequence": "NaN"}),
        ("/accounts/x/state", {"version": "Infinity"}),
        ("/accounts/x/state", {"at": "0001-01-01T00:00:00+14:00"}),
        ("/reports/accounts", {"at": "1e9999"}),
        ("/accounts", {"limit": "1e9999"}),
        ("/dead-letters", {"skip": str(2**64)}),
    ],
)
async def test_other_numeric_query_parameters_are_422(
    api: Api, path: str, params: dict[str, str]
) -> None:
    r = await api.get(path, params=params)
    assert r.status_code == 422, r.text
    assert next(iter(params)) in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "amount", [1e308, "1e9999", "1E+2", "NaN", "Infinity", "-1", "12345678901234.00", "0.001"]
)
async def test_amounts_outside_the_amount_format_are_422(api: Api, amount: Any) -> None:
    await api.open_account("amt")
    for path in ("/accounts/amt/credit", "/accounts/amt/debit"):
        r = await api.post(path, json={"amount": amount})
        assert r.status_code == 422, r.text
        assert "amount" in r.json()["error"]["message"]
    body = {"fromAccountId": "amt", "toAccountId": "other", "amount": amount}
    r = await api.post("/transfers", json=body)
    assert r.status_code == 422, r.text
    assert "amount" in r.json()["error"]["message"]


async def test_json_numbers_beyond_float_are_422(api: Api) -> None:
    r = await api.post(
        "/accounts/x/credit",
        content=b'{"amount": 1e99999}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text


# --- item 17: account ids a URL path cannot carry as they are ------------------------------


@pytest.mark.parametrize(
    ("account_id", "why"),
    [
        (".", "path segment"),
        ("..", "path segment"),
        ("a/b", "'/'"),
        ("a?b", "'?'"),
        ("a#b", "'#'"),
        ("a%2Fb", "'%'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\x00b", "control"),
        ("a\x7fb", "control"),
        ("caf\u00e9", "'\u00e9'"),
        ("", "empty"),
        ("x" * 65, "64"),
    ],
)
async def test_account_ids_a_url_path_cannot_carry_are_refused(
    api: Api, account_id: str, why: str
) -> None:
    body = {"accountId": account_id, "ownerId": "cust1", "currency": "EUR"}
    r = await api.post("/accounts", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["field"] == "body.accountId"
    assert why in error["details"][0]["message"]
    assert await api.services.bank.db["events"].count_documents({}) == 0


@pytest.mark.parametrize("account_id", ["a.b", "...", "acc_1", "A-b:c.d", "x" * 64])
async def test_account_ids_a_url_path_carries_are_accepted(api: Api, account_id: str) -> None:
    body = {"accountId": account_id, "ownerId": "cust1", "currency": "EUR"}
    r = await api.post("/accounts", json=body)
    assert r.status_code == 201, r.text
    r = await api.get(f"/accounts/{account_id}/history")
    assert r.status_code == 200, r.text
    assert r.json()["events"][0]["aggregateId"] == account_id
