"""Settings and the connection to MongoDB (or to the embedded server)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError

from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer
from esmongo.errors import ConfigurationError

STARTUP_TIMEOUT_S = 5.0
"""How long opening a connection waits for a server to answer (the driver's default is 30 s)."""


@dataclass(frozen=True)
class Settings:
    """Where the data lives. Read from the environment by `Settings.from_env`."""

    mongodb_uri: str | None = None
    database: str = "esmongo"
    home: Path = field(default_factory=lambda: Path(".esmongo"))
    erasure_log_path: Path | None = None
    """ESMONGO_ERASURE_LOG: where `forget` logs erasures for restores to replay, outside
    the database and its backups (esmongo.ops.erasures); by default in `home`."""

    @property
    def erasure_log(self) -> Path:
        return self.erasure_log_path or self.home / "erasures.jsonl"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        erasures = env.get("ESMONGO_ERASURE_LOG")
        return cls(
            mongodb_uri=env.get("MONGODB_URI") or None,
            database=env.get("ESMONGO_DB") or "esmongo",
            home=Path(env.get("ESMONGO_HOME") or ".esmongo"),
            erasure_log_path=Path(erasures) if erasures else None,
        )


async def check_replica_set(
    client: AsyncMongoClient[Document], where: str, timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Transactions and change streams need a replica set member (one node is enough).

    Bounded by `timeout_s`: nothing answering is said in one line, not after 30 s of silence.
    """
    try:
        with pymongo.timeout(timeout_s):
            hello = await client.admin.command("hello")
    except ServerSelectionTimeoutError as exc:
        raise ConfigurationError(unreachable(client, where, timeout_s)) from exc
    except OperationFailure as exc:
        reason = (exc.details or {}).get("errmsg") or one_line(exc)
        raise ConfigurationError(f"MongoDB at {where} refused us: {reason}") from exc
    except PyMongoError as exc:
        raise ConfigurationError(f"cannot reach MongoDB at {where}: {one_line(exc)}") from exc
    if "setName" not in hello and hello.get("msg") != "isdbgrid":
        raise ConfigurationError(
            f"the server at {where} is not a replica set member: esmongo needs transactions "
            "and change streams, which need a replica set. A one-node replica set is enough "
            "(start mongod with --replSet rs0 and run rs.initiate())."
        )


def unreachable(client: AsyncMongoClient[Document], where: str, timeout_s: float) -> str:
    """Why no server could be selected, in one line, from what the driver saw of each host."""
    refused: list[str] = []
    failures: list[str] = []
    for (host, port), server in client.topology_description.server_descriptions().items():
        if server.error is None:
            continue
        address = f"{host}:{port}"
        if _refused(server.error):
            refused.append(address)
        else:
            failures.append(f"{address}: {one_line(server.error).removeprefix(address + ': ')}")
    if failures:
        return f"cannot reach MongoDB at {failures[0]}"
    if refused:
        return f"nothing listening at {', '.join(refused)}: is MongoDB running?"
    return f"cannot reach MongoDB at {where}: no suitable server answered within {timeout_s:g}s"


def _refused(error: BaseException) -> bool:
    """The driver keeps only the text of the socket error (no cause chain) to tell by."""
    text = str(error)
    return f"[Errno {errno.ECONNREFUSED}]" in text or os.strerror(errno.ECONNREFUSED) in text


_DRIVER_NOISE = re.compile(r"\s*\((configured timeouts|Background on this error)[^)]*\)")


def one_line(error: BaseException) -> str:
    """A driver error's first line, without the timeouts it appends to every message."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return _DRIVER_NOISE.sub("", lines[0])


class Connection:
    """An open client on the configured database, with the embedded server if one was needed.

    Use as `async with Connection(settings) as conn: ... conn.db ...`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        **client_options: Any,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.startup_timeout_s = startup_timeout_s
        self.server: EmbeddedServer | None = None
        self._client_options = client_options
        self._client: AsyncMongoClient[Document] | None = None

    @property
    def client(self) -> AsyncMongoClient[Document]:
        if self._client is None:
            raise ConfigurationError("the connection is not open")
        return self._client

    @property
    def db(self) -> AsyncDatabase[Document]:
        return self.client.get_database(self.settings.database, codec_options=CODEC_OPTIONS)

    @property
    def uri(self) -> str:
        if self.settings.mongodb_uri:
            return self.settings.mongodb_uri
        if self.server is None:
            raise ConfigurationError("the connection is not open")
        return self.server.uri

    async def open(self) -> Connection:
        if not self.settings.mongodb_uri:
            self.server = EmbeddedServer(self.settings.home)
            self.server.start()
            # Another esmongo process may own it and stop it: bring one back on its port.
            self.server.keep_alive()
        uri = self.uri
        self._client = AsyncMongoClient(uri, **self._client_options)
        try:
            await check_replica_set(self._client, redact(uri), self.startup_timeout_s)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def __aenter__(self) -> Connection:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    scheme, sep, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
