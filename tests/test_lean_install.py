"""The core runs with only its own dependencies (PyMongo, jsonschema, jsonschema-rs); the
extras add the rest.

The extras are installed in the test venv, so each subprocess starts with a `sitecustomize`
that makes importing them fail, as a `pip install esmongo` without extras would: the whole
library, the console script and its one-line answers run as a core install runs them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from importlib.metadata import entry_points, requires
from pathlib import Path

import pytest
from pymongo import MongoClient

ESMONGO = str(Path(sys.executable).with_name("esmongo"))
SERVICE = (
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "prometheus_client",
    "jinja2",
    "multipart",
)
CLI = ("typer", "click", "rich")
EVENTSOURCING = ("eventsourcing",)
CRYPTO = ("cryptography",)
"""Imported only when a master key is configured (esmongo.store.data_keys)."""
EXTRAS = (*SERVICE, *CLI, *EVENTSOURCING, *CRYPTO)
DEV = ("pytest", "_pytest", "pytest_asyncio")
"""Test tools: a core install lacks them too (esmongo.testing needs them, by design)."""

REFUSE = """
import os
import sys
from importlib.abc import MetaPathFinder

REFUSED = frozenset(os.environ["ESMONGO_TEST_REFUSE"].split(","))


class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
"""

CORE = """
import asyncio
import importlib
import pkgutil
import sys
import types

import esmongo
from esmongo import NO_STREAM, EventStore, NewEvent
from esmongo.codec import CODEC_OPTIONS
from pymongo import AsyncMongoClient

REFUSED = {refused!r}
APPLICATION = (  # extras, test tools
    "esmongo.api",
    "esmongo.cli",
    "esmongo.console",
    "esmongo.testing",
    "esmongo.eventsourcing",
)


def import_all(package: types.ModuleType) -> int:
    count = 0
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.startswith(APPLICATION):
            continue
        module = importlib.import_module(info.name)
        count += 1
        if info.ispkg:
            count += import_all(module)
    return count


async def main() -> None:
    try:
        import fastapi  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("the extras are not refused")
    imported = import_all(esmongo)
    from esmongo import metrics

    metrics.APPEND_LATENCY.observe(0.01)
    metrics.PROJECTION_LAG_EVENTS.labels("p").set(3)
    metrics.SNAPSHOT_LOADS.labels("account", "hit").inc()
    client = AsyncMongoClient({uri!r})
    try:
        store = EventStore(client.get_database({database!r}, codec_options=CODEC_OPTIONS))
        await store.init()
        await store.append(
            "account", "a1", [NewEvent("account.opened", {{"owner": "ann"}})],
            expected_version=NO_STREAM,
        )
        events = [event async for event in store.read_stream("account", "a1")]
        assert [(e.event_type, e.data, e.aggregate_version) for e in events] == [
            ("account.opened", {{"owner": "ann"}}, 1)
        ], events
    finally:
        await client.close()
    loaded = sorted({{name.partition(".")[0] for name in sys.modules}} & REFUSED)
    assert not loaded, loaded
    print("imported", imported, "modules; appended and read 1 event")


asyncio.run(main())
"""


def refusing(tmp_path: Path, refused: tuple[str, ...]) -> dict[str, str]:
    """An environment whose Python refuses to import `refused`, from its first import on."""
    site = tmp_path / "refuse"
    site.mkdir()
    (site / "sitecustomize.py").write_text(REFUSE)
    return {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(site),
        "ESMONGO_TEST_REFUSE": ",".join(refused),
        "ESMONGO_HOME": str(tmp_path / "home"),
    }


def test_the_core_imports_and_works_without_the_extras(server_uri: str, tmp_path: Path) -> None:
    database = f"t_lean_{uuid.uuid4().hex[:8]}"
    script = CORE.format(refused={*EXTRAS, *DEV}, uri=server_uri, database=database)
    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env=refusing(tmp_path, (*EXTRAS, *DEV)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        with MongoClient(server_uri) as client:
            client.drop_database(database)
    assert result.returncode == 0, result.stderr
    assert "appended and read 1 event" in result.stdout


def test_the_console_script_without_the_cli_extra_says_what_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [ESMONGO, "events", "list"],
        env=refusing(tmp_path, EXTRAS),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "esmongo: the command line is an extra: pip install 'esmongo[cli]'"
    ]


def test_the_eventsourcing_module_without_its_extra_says_what_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import esmongo.eventsourcing"],
        env=refusing(tmp_path, EVENTSOURCING),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ModuleNotFoundError: esmongo.eventsourcing needs the eventsourcing library: "
        "pip install 'esmongo[eventsourcing]'"
    )


@pytest.mark.parametrize(("command", "missing"), [(["serve", "--port", "0"], "uvicorn")])
def test_a_service_command_without_the_service_extra_says_what_to_install(
    tmp_path: Path, command: list[str], missing: str
) -> None:
    # Typer itself brings pydantic, so a `cli`-only install has it: refuse the rest.
    without_service = tuple(name for name in SERVICE if name != "pydantic")
    result = subprocess.run(
        [ESMONGO, *command],
        env=refusing(tmp_path, without_service),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {missing} is not installed: pip install 'esmongo[service]'"
    ]


def test_the_installed_metadata_keeps_the_extras_out_of_the_core() -> None:
    def names(extra: str | None) -> set[str]:
        marker = f'extra == "{extra}"'
        return {
            re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
            for req in requires("esmongo") or []
            if (marker in req if extra else "extra ==" not in req)
        }

    assert names(None) == {"pymongo", "jsonschema", "jsonschema-rs"}
    assert {"fastapi", "pydantic", "uvicorn", "prometheus-client"} <= names("service")
    assert {"typer", "rich"} <= names("cli")
    assert names("embedded") == {"SecantusDB"}
    assert names("eventsourcing") == {"eventsourcing"}
    (script,) = entry_points(group="console_scripts", name="esmongo")
    assert script.value == "esmongo.__main__:main"
