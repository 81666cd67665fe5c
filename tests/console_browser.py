"""What the console's browser tests share: a live `esmongo serve` on the embedded database,
Chromium from Debian driven by Playwright, keys per role, API calls, failure screenshots."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from esmongo.api.auth import ApiKeys, Role

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

from console_serve import CHROMIUM_ARGS as CHROMIUM_ARGS  # for the tests' browser fixture
from console_serve import ServeFailed, chromium_path, serve

BUG_PATH = str(Path(__file__).parent / "console_bug")
START_BOUND_S = 90.0


def browser_or_skip() -> str:
    """Chromium's path; the tests skip, saying why, only where none is installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (.ci/run installs it)")
    return path


@dataclass
class Console:
    """One `esmongo serve` process and the keys made for it."""

    url: str
    keys: dict[str, str]
    bug_file: Path
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def open_account(self, account_id: str, owner: str = "cust1", funds: str = "100.00") -> None:
        body = {"accountId": account_id, "ownerId": owner, "ownerName": owner, "currency": "EUR"}
        assert self.api("POST", "/accounts", json=body).status_code == 201
        assert self.api("POST", f"/accounts/{account_id}/activate").status_code == 200
        self.credit(account_id, funds)

    def credit(self, account_id: str, amount: str, reason: str | None = None) -> dict[str, Any]:
        body = {"amount": amount, "reason": reason}
        r = self.api("POST", f"/accounts/{account_id}/credit", json=body)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def balance_at(self, account_id: str, version: int) -> Decimal:
        r = self.api("GET", f"/accounts/{account_id}/state", params={"version": version})
        assert r.status_code == 200, r.text
        return Decimal(r.json()["balance"])


def in_thread(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to its end on a loop of its own: Playwright's sync API owns this
    thread's loop while a browser is open."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


async def _make_keys(uri: str, database: str) -> dict[str, str]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        keys = ApiKeys(client[database])
        await keys.init()
        return {
            "admin": await keys.create(Role.ADMIN, "ops1", "Operator One"),
            "auditor": await keys.create(Role.AUDITOR, "aud1", "Auditor One"),
            "customer": await keys.create(Role.CUSTOMER, "cust1", "Customer One"),
            "teller": await keys.create(Role.TELLER, "tell1", "Teller One"),
        }
    finally:
        await client.close()


async def _drop(uri: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture(scope="module")
def console(server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """`esmongo serve` on its own database of the session's embedded server."""
    browser_or_skip()
    workdir = tmp_path_factory.mktemp("console")
    database = f"console_{uuid.uuid4().hex[:10]}"
    keys = in_thread(lambda: _make_keys(server_uri, database))
    bug_file = workdir / "bug"
    env = dict(os.environ)
    env.update(
        {
            "MONGODB_URI": server_uri,
            "ESMONGO_DB": database,
            "ESMONGO_HOME": str(workdir / "home"),
            "ESMONGO_TEST_BUG_FILE": str(bug_file),
            "PYTHONPATH": os.pathsep.join(filter(None, [BUG_PATH, env.get("PYTHONPATH")])),
        }
    )
    log = workdir / "serve.log"
    try:
        with serve(env, log, cwd=workdir, ready_within_s=START_BOUND_S) as (url, process):
            yield Console(url, keys, bug_file, process, log)
    except ServeFailed as exc:
        pytest.fail(str(exc))
    finally:
        in_thread(lambda: _drop(server_uri, database))


def output_dir(request: pytest.FixtureRequest) -> Path:
    """Where a failing test's screenshots go: test-results/<test> under the rootdir."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.nodeid).strip("-")
    return Path(request.config.rootpath) / "test-results" / name
