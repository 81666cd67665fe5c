"""`esmongo serve --no-access-log`: the service logs at info level, but not every request.

Through the real console script on the session's embedded server. The access log costs the
service CPU on every request (docs/operations.md), so operators whose proxy logs requests
can turn it off without losing the service's other info lines.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

from console_serve import serve

ACCESS_LINE = '"GET /healthz HTTP/1.1" 200'


@pytest.mark.parametrize(
    ("args", "setting", "logged"),
    [((), None, True), (("--no-access-log",), None, False), ((), "0", False)],
)
def test_the_access_log_can_be_turned_off(
    server_uri: str, tmp_path: Path, args: tuple[str, ...], setting: str | None, logged: bool
) -> None:
    database = f"access_{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    env.update(
        {
            "MONGODB_URI": server_uri,
            "ESMONGO_DB": database,
            "ESMONGO_HOME": str(tmp_path / "home"),
        }
    )
    env.pop("ESMONGO_ACCESS_LOG", None)
    if setting is not None:
        env["ESMONGO_ACCESS_LOG"] = setting
    log = tmp_path / "serve.log"
    try:
        with serve(env, log, cwd=tmp_path, args=("--log-level", "info", *args)) as (url, _):
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        with MongoClient(server_uri) as client:
            client.drop_database(database)
    output = log.read_text()
    assert "Application startup complete" in output  # info lines either way
    assert (ACCESS_LINE in output) is logged, output
