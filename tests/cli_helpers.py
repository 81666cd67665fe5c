"""The console script, run as an operator runs it, on one test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ESMONGO = str(Path(sys.executable).with_name("esmongo"))


def esmongo(
    server_uri: str, db: Any, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`esmongo ARGS` on the database `db` (its name) of that server; `env` adds to it."""
    environment = {
        **os.environ,
        "MONGODB_URI": server_uri,
        "ESMONGO_DB": db if isinstance(db, str) else db.name,
        "COLUMNS": "200",
        **(env or {}),
    }
    return subprocess.run(
        [ESMONGO, *args], env=environment, capture_output=True, text=True, timeout=120, check=False
    )
