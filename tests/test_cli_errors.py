"""The `esmongo` console script, run as a user runs it: every error is one line on stderr and
an exit code (0 done, 1 the work failed, 2 configuration), never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

ESMONGO = str(Path(sys.executable).with_name("esmongo"))


@pytest.fixture
def env(server_uri: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The test server and a database of its own; no embedded server of the CLI's own."""
    database = f"t_cli_{uuid.uuid4().hex[:8]}"
    yield {
        "PATH": str(Path(sys.executable).parent),
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": database,
        "ESMONGO_HOME": str(tmp_path / "home"),
        "COLUMNS": "60",  # narrow: a wrapped message would show as several lines
    }
    with MongoClient(server_uri) as client:
        client.drop_database(database)


def esmongo(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ESMONGO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line; the informational "database ... on ..." line may precede it."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("database ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_backup_into_a_file_path(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    result = esmongo(env, "backup", str(target))
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert str(target) in line and "not a directory" in line
    assert target.read_text() == "not a directory"


def test_backup_under_a_file_path(env: dict[str, str], tmp_path: Path) -> None:
    parent = tmp_path / "a-file"
    parent.write_text("")
    result = esmongo(env, "backup", str(parent / "backup"))
    assert result.returncode == 1, result.stderr
    assert str(parent) in error_line(result)


def test_restore_from_a_missing_directory(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-backup"
    result = esmongo(env, "restore", str(missing))
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert str(missing) in line and "no such directory" in line


def test_restore_from_a_file(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    result = esmongo(env, "restore", str(target))
    assert result.returncode == 1, result.stderr
    assert "not a directory" in error_line(result)


def test_events_list_after_a_sequence_bson_cannot_hold(env: dict[str, str]) -> None:
    result = esmongo(env, "events", "list", "--after", str(2**64))
    assert result.returncode == 2, result.stderr
    assert "--after" in error_line(result)


def test_usage_errors_are_one_line(env: dict[str, str]) -> None:
    result = esmongo(env, "events", "list", "--since", "not-a-date")
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert "--since" in line and "esmongo events list --help" in line


def test_a_migration_module_that_fails_to_import(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "broken_migrations.py").write_text("MIGRATIONS = [1 / 0]\n")
    env = env | {"PYTHONPATH": str(tmp_path)}
    result = esmongo(env, "migrate", "dry-run", "--migrations", "broken_migrations:MIGRATIONS")
    assert result.returncode == 1, result.stderr
    assert "ZeroDivisionError" in error_line(result)


def test_debug_keeps_the_traceback(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    (tmp_path / "broken_migrations.py").write_text("MIGRATIONS = [1 / 0]\n")
    env = env | {"PYTHONPATH": str(tmp_path), "ESMONGO_DEBUG": "1"}
    result = esmongo(env, "migrate", "dry-run", "--migrations", "broken_migrations:MIGRATIONS")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_serve_on_a_busy_port_exits_2_before_announcing(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = esmongo(env, "serve", "--port", str(port))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "serving" not in result.stdout and "key" not in result.stdout
    line = error_line(result)
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_serve_with_an_unknown_inline_projection_exits_2(env: dict[str, str]) -> None:
    result = esmongo(env, "serve", "--port", "0", "--inline", "acounts_read")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "serving" not in result.stdout
    line = error_line(result)
    assert "no projection acounts_read" in line and "accounts_read" in line
    result = esmongo(env | {"ESMONGO_INLINE_PROJECTIONS": "nope"}, "serve", "--port", "0")
    assert result.returncode == 2 and "no projection nope" in error_line(result)
