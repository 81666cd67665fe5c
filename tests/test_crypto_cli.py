"""`esmongo forget`, `esmongo crypto rewrap` and `esmongo restore` with the erasure log, as
an operator runs them (the environment configures the master key and the log)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from esmongo.bank import Bank, CreateAccount
from esmongo.cli import app as cli_app
from esmongo.codec import CODEC_OPTIONS
from esmongo.store import EventStore
from esmongo.store.data_keys import MASTER_KEY_ENV, DataKeys, MasterKeys, new_master_key
from esmongo.store.personal import REDACTED

Db = AsyncDatabase[dict[str, Any]]


async def cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)


async def test_forget_rewrap_and_restore_from_the_command_line(
    db: Db, tmp_path: Path, server_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_master_key(), new_master_key().replace("mk-", "mk2-", 1)
    log = tmp_path / "erasures.jsonl"
    env = {
        **os.environ,
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": db.name,
        MASTER_KEY_ENV: old,
        "ESMONGO_ERASURE_LOG": str(log),
    }
    with monkeypatch.context() as patched:
        patched.setenv(MASTER_KEY_ENV, old)
        bank = await Bank(db).init()
        await bank.handle(CreateAccount("a1", "alice", "Alice Smith", "EUR"))
        await bank.handle(CreateAccount("b1", "bob", "Bob Jones", "EUR"))
    backed = await cli(env, "backup", str(tmp_path / "b"))
    assert backed.exit_code == 0, backed.output
    assert log.exists() and log.read_text() == ""  # made empty: nobody forgotten yet

    unknown = await cli(env, "forget", "user:nobody")
    assert unknown.exit_code != 0 and "no data key for subject 'user:nobody'" in unknown.output
    done = await cli(env, "forget", "user:alice", "--reason", "GDPR request 9")
    assert done.exit_code == 0, done.output
    assert "forgot user:alice: 1 data key(s) deleted" in done.output
    again = await cli(env, "forget", "user:alice")
    assert again.exit_code == 0 and "forgotten before" in again.output
    assert log.read_text().count("user:alice") == 1

    rotated = await cli({**env, MASTER_KEY_ENV: f"{new},{old}"}, "crypto", "rewrap")
    assert rotated.exit_code == 0, rotated.output
    # bob's, and the shell user's (the audit events' metadata); alice's is gone
    assert "re-wrapped 2 data key(s)" in rotated.output
    async for doc in db.esmongo_data_keys.find():
        assert doc["master"] == new.split(":")[0]

    # A restore of the backup made before the erasure, into another database.
    target = {**env, "ESMONGO_DB": f"{db.name}_r", MASTER_KEY_ENV: f"{new},{old}"}
    try:
        missing = await cli(
            {**target, "ESMONGO_ERASURE_LOG": str(tmp_path / "x")}, "restore", str(tmp_path / "b")
        )
        assert missing.exit_code != 0 and "no erasure log at" in missing.output
        restored = await cli(target, "restore", str(tmp_path / "b"))
        assert restored.exit_code == 0, restored.output
        said = " ".join(restored.output.split())
        assert "1 erasures replayed (1 forgotten keys left out)" in said
        restored_db = db.client.get_database(f"{db.name}_r", codec_options=CODEC_OPTIONS)
        keys = DataKeys(restored_db, MasterKeys.parse(f"{new},{old}"))
        store = EventStore(restored_db, keys=keys)
        opened = [
            e.data["ownerName"] async for e in store.read_all(event_types=["account.created"])
        ]
        assert opened == [REDACTED, "Bob Jones"]  # bob's key, wrapped by the old master key
    finally:
        await db.client.drop_database(f"{db.name}_r")


async def test_a_malformed_master_key_is_one_clear_line(db: Db, server_uri: str) -> None:
    env = {
        **os.environ,
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": db.name,
        MASTER_KEY_ENV: "not-a-key-at-all",
    }
    result = await cli(env, "events", "list")
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "ESMONGO_MASTER_KEY: key #1 must be 'id:base64-key'" in said
    assert "not-a-key-at-all" not in said  # a secret is never echoed
