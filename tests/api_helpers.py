"""An API client on the real database, with one key per role."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.api import Role, create_app
from esmongo.api.app import Starter
from esmongo.api.context import Services


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient
    keys: dict[str, str]

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def post(self, path: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = self.auth(who) | kwargs.pop("headers", {})
        return await self.http.post(path, headers=headers, **kwargs)

    async def get(self, path: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = self.auth(who) | kwargs.pop("headers", {})
        return await self.http.get(path, headers=headers, **kwargs)

    async def open_account(
        self, account_id: str, owner: str = "cust1", currency: str = "EUR", funds: str | None = None
    ) -> None:
        body = {"accountId": account_id, "ownerId": owner, "ownerName": owner, "currency": currency}
        assert (await self.post("/accounts", json=body)).status_code == 201
        assert (await self.post(f"/accounts/{account_id}/activate")).status_code == 200
        if funds is not None:
            r = await self.post(f"/accounts/{account_id}/credit", json={"amount": funds})
            assert r.status_code == 200, r.text


@contextlib.asynccontextmanager
async def api_client(
    db: AsyncDatabase[dict[str, Any]], background: Starter | None = None
) -> AsyncIterator[Api]:
    app = create_app(db=db, background=background)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        keys = {
            "admin": await svc.keys.create(Role.ADMIN, "admin1"),
            "teller": await svc.keys.create(Role.TELLER, "teller1"),
            "auditor": await svc.keys.create(Role.AUDITOR, "auditor1"),
            "cust1": await svc.keys.create(Role.CUSTOMER, "cust1", "Customer One"),
            "cust2": await svc.keys.create(Role.CUSTOMER, "cust2", "Customer Two"),
        }
        transport = httpx.ASGITransport(app=app, client=("127.0.0.2", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(app, http, keys)
