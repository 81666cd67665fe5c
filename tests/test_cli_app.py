"""The generic commands on an application that is not the bank (`ESMONGO_APP`), through the
real console script: events, projections, snapshots, schemas and check see its store, its
projections and its aggregates; the bank's own commands refuse it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cli_helpers import esmongo as run_esmongo
from esmongo.codec import Document
from esmongo.ops.audit import AUDIT_SCHEMAS
from tally_app import TALLIES, Tally, make

TESTS = str(Path(__file__).parent)

Db = AsyncDatabase[Document]


def esmongo(
    server_uri: str, db: Db, *args: str, app: str = "tally_app:make"
) -> subprocess.CompletedProcess[str]:
    return run_esmongo(server_uri, db, *args, env={"PYTHONPATH": TESTS, "ESMONGO_APP": app})


async def tallies(db: Db) -> None:
    """Two tallies: t1 with 5 events, t2 with 1."""
    app = await make(db).init()
    repository = app.repository(Tally)
    for aggregate_id, amounts in (("t1", [1, 2, 3, 4, 5]), ("t2", [10])):
        tally = Tally(aggregate_id)
        for amount in amounts:
            tally.add(amount)
        await repository.save(tally)
    await app.close()


async def test_generic_commands_work_on_another_application(db: Db, server_uri: str) -> None:
    await tallies(db)

    listed = esmongo(server_uri, db, "events", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("tally.added") == 6 and "tally/t1" in listed.stdout
    only_t2 = esmongo(server_uri, db, "events", "list", "--after", "5")
    assert "tally/t2" in only_t2.stdout and "tally/t1" not in only_t2.stdout

    status = esmongo(server_uri, db, "projections", "status")
    assert status.returncode == 0, status.stderr
    assert TALLIES in status.stdout and "accounts_read" not in status.stdout

    rebuilt = esmongo(server_uri, db, "projections", "rebuild", TALLIES)
    assert rebuilt.returncode == 0, rebuilt.stderr
    totals = {d["tallyId"]: d["total"] async for d in db[TALLIES].find()}
    assert totals == {"t1": 15, "t2": 10}
    unknown = esmongo(server_uri, db, "projections", "rebuild", "accounts_read")
    assert unknown.returncode == 1 and f"(known: {TALLIES})" in unknown.stderr

    snapshots = esmongo(server_uri, db, "snapshots", "create", "--min-events", "3")
    assert snapshots.returncode == 0, snapshots.stderr
    assert "1 snapshot(s) written" in snapshots.stdout
    snapshot = await make(db).snapshots.get("tally", "t1")
    assert snapshot is not None and snapshot.version == 5 and snapshot.state == {"total": 15}
    wrong = esmongo(server_uri, db, "snapshots", "create", "--type", "account")
    assert wrong.returncode == 1 and "(known: tally)" in wrong.stderr

    synced = esmongo(server_uri, db, "schemas", "sync", "--dry-run")
    assert synced.returncode == 0, synced.stderr
    # The tally's schema and the audit trail's, which every application registers.
    assert f"{1 + len(AUDIT_SCHEMAS)} unchanged, 0 drifting" in synced.stdout

    checked = esmongo(server_uri, db, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "healthy" in checked.stderr


async def test_the_bank_commands_refuse_another_application(db: Db, server_uri: str) -> None:
    for command in (["archive", "acc_1"], ["serve", "--port", "0"], ["demo"]):
        result = esmongo(server_uri, db, *command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "is the bank's command" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("no_such_module:make", "cannot load it"),
        ("tally_app:missing", "cannot load it"),
        ("tally_app", "must be module:factory"),
        ("tally_app:not_an_application", "not an esmongo Application"),
    ],
)
def test_a_wrong_application_is_a_configuration_error(
    db: Db, server_uri: str, app: str, says: str
) -> None:
    result = esmongo(server_uri, db, "events", "list", app=app)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
