"""Without MONGODB_URI, every application of a process shares one embedded server, which
the first application to close does not stop (a System's others still use it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from esmongo.connect.embedded import pid_alive

TESTS = Path(__file__).parent

SCRIPT = """
import json
from pathlib import Path

from es_apps import Orders


class Payments(Orders):
    pass


home = Path({home!r})
orders, payments = Orders(), Payments()
orders.place("first")
server = json.loads((home / "server.json").read_text())["pid"]
orders.close()
payments.place("after the other closed")  # the same server, not a restarted one
assert json.loads((home / "server.json").read_text())["pid"] == server
assert [n.id for n in payments.recorder.select_notifications(None, 10)] == [1]
payments.close()
print(server)
"""


def test_applications_share_one_embedded_server_stopped_at_exit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MONGODB_URI", "MONGODB_DATABASE")
    }
    env |= {
        "ESMONGO_HOME": str(home),
        "PYTHONPATH": str(TESTS),
        "PERSISTENCE_MODULE": "esmongo.eventsourcing",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(home=str(home)))],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    server = int(result.stdout.strip())
    deadline = time.monotonic() + 30  # the server process is reaped after ours exits
    while pid_alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(server), "the embedded server outlived the process that started it"
