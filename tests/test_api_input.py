"""Hostile input to the HTTP API: numbers MongoDB cannot hold, ids a URL path cannot carry,
oversized bodies. Each is a 4xx that says what is wrong, never a 500 or a stall."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client
from esmongo.api import create_app
from esmongo.api.body_limit import DEFAULT_MAX_BODY_BYTES
from esmongo.api.errors import MAX_DETAILS
from esmongo.api.server import serve_in_thread
from esmongo.connect.connection import Settings


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


# --- item 16: bounded request bodies and bounded error bodies ------------------------------


async def test_declared_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    read: list[bytes] = []
    never = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        read.append(b"{")
        yield b"{"
        await never.wait()  # a client that never finishes: reading it would hang the request

    headers = {"Content-Length": str(100 * 1024 * 1024), "Content-Type": "application/json"}
    r = await asyncio.wait_for(api.post("/accounts", content=trickle(), headers=headers), 30)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "request_too_large"
    assert str(DEFAULT_MAX_BODY_BYTES) in r.json()["error"]["message"]
    assert read == []  # refused on the header alone


async def test_streamed_oversized_body_is_refused_while_counting(api: Api) -> None:
    chunk = b" " * 1024
    sent: list[int] = []

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 1 MB, no Content-Length: Transfer-Encoding chunked
            sent.append(len(chunk))
            yield chunk

    r = await api.post("/accounts", content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json() == {
        "error": {
            "code": "request_too_large",
            "message": f"the request body is over the limit of {DEFAULT_MAX_BODY_BYTES} bytes",
        }
    }
    assert sum(sent) <= DEFAULT_MAX_BODY_BYTES + len(chunk)  # stopped reading at the limit


async def test_many_unknown_fields_get_a_small_error_body(api: Api) -> None:
    fields = {f"f{i:04d}": 0 for i in range(5000)}
    content = json.dumps({"amount": "1.00", **fields}).encode()
    assert len(content) < DEFAULT_MAX_BODY_BYTES
    r = await api.post(
        "/accounts/x/credit", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 8 * 1024
    error = r.json()["error"]
    assert len(error["details"]) == MAX_DETAILS
    assert "5000 problems" in error["message"] or "4995 more" in error["message"]


async def test_long_field_names_and_messages_are_cut(api: Api) -> None:
    content = json.dumps({"amount": "1.00", "k" * 50_000: 0}).encode()
    r = await api.post(
        "/accounts/x/credit", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert len(r.content) < 4 * 1024
    assert "more characters" in r.json()["error"]["details"][0]["field"]


async def test_the_largest_legitimate_command_fits_the_default_limit(api: Api) -> None:
    body = {
        "accountId": "x" * 64,
        "ownerId": "cust1",
        "ownerName": "\U0001f600" * 500,  # 12 bytes each, JSON-escaped as a surrogate pair
        "currency": "EUR",
    }
    content = json.dumps(body, ensure_ascii=True).encode()
    r = await api.post("/accounts", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert len(content) < DEFAULT_MAX_BODY_BYTES // 8


async def test_the_limit_is_configurable(db: AsyncDatabase[dict[str, Any]]) -> None:
    app = create_app(db=db, max_body_bytes=100)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            small = await http.post("/accounts", content=b"{" + b" " * 98 + b"}")
            large = await http.post("/accounts", content=b"{" + b" " * 99 + b"}")
    assert small.status_code == 401  # within the limit: on to authentication
    assert large.status_code == 413
    assert "limit of 100 bytes" in large.json()["error"]["message"]
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(db=db, max_body_bytes=0)


def test_a_real_server_answers_413_without_reading_the_body(server_uri: str) -> None:
    settings = Settings(mongodb_uri=server_uri, database=f"t_limit_{uuid.uuid4().hex[:8]}")
    with serve_in_thread(create_app(settings=settings)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000\r\n\r\n{"
            )
            answer = b""
            while chunk := sock.recv(65536):  # the server closes once it has answered
                answer += chunk
        with httpx.Client(base_url=base_url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
    with MongoClient(server_uri) as client:
        client.drop_database(settings.database)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'"request_too_large"' in answer
