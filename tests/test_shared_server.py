"""Several `esmongo serve` on one embedded server, and a database that goes away
(issue 10, item 18): survivors reconnect, and /readyz answers fast and tells the truth.

Real processes on private embedded servers in temp dirs (never the session one). Waiting on
another process is polling with a deadline: there is nothing in this process to await.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from esmongo.connect.embedded import EmbeddedServer, answers_hello, free_port, pid_alive
from esmongo.projections.leases import COLLECTION as LEASES

ESMONGO = str(Path(sys.executable).parent / "esmongo")
START_BOUND_S = 90.0  # a cold start of the service and its server, on a loaded 2-core machine
RECOVERY_BOUND_S = 15.0
STOPPED = (
    0,
    -signal.SIGTERM,
)  # the watchdog's 0.5 s, a server start (~0.6 s here), the driver's retry


def poll(what: str, check: Callable[[], bool], bound_s: float) -> float:
    """Seconds until `check()` holds; fails the test after `bound_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > bound_s:
            pytest.fail(f"{what}: not within {bound_s:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


class Serve:
    """One `esmongo serve` process."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [ESMONGO, "serve", "--port", str(self.port), "--log-level", "warning"],
                env=env,
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, timeout_s: float = 5.0, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout_s, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=5.0, **kwargs)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"esmongo serve exited: {self.log.read_text()}")
        try:
            return self.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def answers(self, path: str, headers: dict[str, str]) -> bool:
        try:
            return self.get(path, headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # what a service manager sends
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serves(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Serve]]:
    started: list[Serve] = []

    def start(name: str, extra_env: dict[str, str]) -> Serve:
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        env.update({"ESMONGO_DB": "shared", **extra_env})
        serve = Serve(tmp_path, name, env)
        started.append(serve)
        return serve

    try:
        yield start
    finally:
        for serve in reversed(started):
            serve.stop()


def leases_held_by(uri: str, pid: int, count: int = 3) -> Callable[[], bool]:
    """Whether the process `pid` holds the `count` projection leases (its daemon runs)."""

    def check() -> bool:
        client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=2000)
        with client:
            leases = list(client["shared"][LEASES].find())
        return len(leases) == count and all(f":{pid}:" in (d.get("owner") or "") for d in leases)

    return check


def recorded_server(home: Path) -> dict[str, int]:
    try:
        return dict(json.loads((home / "server.json").read_text()))
    except FileNotFoundError:
        return {}


def test_stopping_the_serve_that_started_the_server_leaves_the_other_serving(
    serves: Callable[[str, dict[str, str]], Serve], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = serves("first", {"ESMONGO_HOME": str(home)})
    poll("the first serve is ready", first.ready, START_BOUND_S)
    second = serves("second", {"ESMONGO_HOME": str(home)})
    poll("the second serve is ready", second.ready, START_BOUND_S)
    original = recorded_server(home)
    second_uri = f"mongodb://127.0.0.1:{original['port']}/?directConnection=true"
    auth = {"Authorization": f"Bearer {(home / 'dev-admin-key').read_text().strip()}"}
    created = second.post("/accounts", json={"accountId": "acc_1", "currency": "EUR"}, headers=auth)
    assert created.status_code == 201, created.text

    first.stop()  # it started the server, so the server stops with it
    assert first.process.returncode in STOPPED  # uvicorn re-raises SIGTERM after its shutdown
    # SIGTERM'd, serve ends before its Connection closes; the server dies with it (SIGKILL).
    poll("the first server stops", lambda: not pid_alive(original["pid"]), RECOVERY_BOUND_S)

    back = poll(
        "the second serve answers again",
        lambda: second.answers("/accounts/acc_1", auth),
        RECOVERY_BOUND_S,
    )
    print(f"the second serve answered again {back:.1f}s after the first stopped")
    assert second.ready()
    # The server answers a moment before its port file is written: wait for the file.
    poll(
        "the new server is recorded",
        lambda: recorded_server(home).get("pid") not in (None, original["pid"]),
        5.0,
    )
    revived = recorded_server(home)
    assert revived["port"] == original["port"]  # where the driver looks for it
    assert revived["pid"] != original["pid"] and pid_alive(revived["pid"])
    # And its projection daemon, which stood by, takes the leases the first one left.
    poll("the second takes the leases", leases_held_by(second_uri, second.process.pid), 60.0)
    again = second.post("/accounts", json={"accountId": "acc_2", "currency": "EUR"}, headers=auth)
    assert again.status_code == 201, again.text
    assert second.get("/accounts/acc_1", headers=auth).json()["accountId"] == "acc_1"

    second.stop()  # it owns the server it brought back: that one stops too
    assert second.process.returncode in STOPPED
    poll("the revived server stops", lambda: not pid_alive(revived["pid"]), RECOVERY_BOUND_S)


def test_readyz_fails_fast_while_the_database_is_gone_and_recovers_when_it_is_back(
    serves: Callable[[str, dict[str, str]], Serve], tmp_path: Path
) -> None:
    database = EmbeddedServer(tmp_path / "database")
    info = database.start()
    try:
        serve = serves("serve", {"MONGODB_URI": info.uri, "ESMONGO_HOME": str(tmp_path / "x")})
        poll("serve is ready", serve.ready, START_BOUND_S)
        poll("its projections run", leases_held_by(info.uri, serve.process.pid), START_BOUND_S)
        assert serve.get("/readyz").json()["checks"]["projections"] == "running"

        database.stop()
        assert not answers_hello(info.port, timeout_s=0.2)
        started = time.monotonic()
        answer = serve.get("/readyz", timeout_s=10.0)
        assert time.monotonic() - started < 3.0
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert checks["database"].startswith("unreachable")
        assert checks["projections"] == "stalled: the database is unreachable"

        # A new server on the same data directory comes back on the same port: found.
        assert database.start().port == info.port
        poll("serve is ready again", serve.ready, RECOVERY_BOUND_S)
        assert serve.get("/readyz").json()["checks"] == {"database": "ok", "projections": "running"}
        serve.stop()  # while its database runs: its shutdown would wait for it
    finally:
        database.stop()


def test_a_reuser_brings_the_server_back_on_its_port_when_the_owner_stops_it(
    tmp_path: Path,
) -> None:
    owner = EmbeddedServer(tmp_path)
    first = owner.start()
    # As an owner that does not remember ports (an older esmongo) leaves it: the reuser
    # still comes back where its clients look.
    (tmp_path / "server.port").unlink()
    reuser = EmbeddedServer(tmp_path)
    assert reuser.start() == first and not reuser.owned
    reuser.keep_alive(interval_s=0.05)
    client: MongoClient[dict[str, Any]] = MongoClient(reuser.uri, serverSelectionTimeoutMS=10_000)
    try:
        client["t"]["c"].insert_one({"_id": 1})
        owner.stop()
        assert not pid_alive(first.pid)
        poll("a new server", lambda: reuser.owned and reuser.info is not None, RECOVERY_BOUND_S)
        assert reuser.info is not None
        assert reuser.info.port == first.port and reuser.info.pid != first.pid
        # The same client, never rebuilt, reads what the first server committed.
        assert client["t"]["c"].find_one({"_id": 1}) == {"_id": 1}
        assert recorded_server(tmp_path) == {"pid": reuser.info.pid, "port": first.port}
    finally:
        client.close()
        reuser.stop()
        owner.stop()
    assert not (tmp_path / "server.json").exists()
    assert reuser.info is None
    assert reuser._watchdog is None  # the watch ended with the stop: nothing comes back


def test_a_new_server_of_a_home_listens_where_the_last_one_did(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path) as server:
        assert server.info is not None
        port = server.info.port
    assert (tmp_path / "server.port").read_text() == str(port)
    with EmbeddedServer(tmp_path) as server:
        assert server.info is not None and server.info.port == port
