"""Settings, codecs and the connection to MongoDB (or to the embedded server)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

from bson.codec_options import CodecOptions, TypeDecoder, TypeEncoder, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from esmongo.embedded import EmbeddedServer
from esmongo.errors import ConfigurationError

Document = dict[str, Any]


class _DecimalEncoder(TypeEncoder):
    """Money is Decimal in Python and Decimal128 in MongoDB, never float."""

    @property
    def python_type(self) -> type:
        return Decimal

    def transform_python(self, value: Any) -> Decimal128:
        return Decimal128(value)


class _Decimal128Decoder(TypeDecoder):
    @property
    def bson_type(self) -> type:
        return Decimal128

    def transform_bson(self, value: Any) -> Decimal:
        return value.to_decimal()  # type: ignore[no-any-return]


CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    document_class=dict,
    tz_aware=True,
    tzinfo=UTC,
    type_registry=TypeRegistry([_DecimalEncoder(), _Decimal128Decoder()]),
)


@dataclass(frozen=True)
class Settings:
    """Where the data lives. Read from the environment by `Settings.from_env`."""

    mongodb_uri: str | None = None
    database: str = "esmongo"
    home: Path = field(default_factory=lambda: Path(".esmongo"))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            mongodb_uri=env.get("MONGODB_URI") or None,
            database=env.get("ESMONGO_DB") or "esmongo",
            home=Path(env.get("ESMONGO_HOME") or ".esmongo"),
        )


async def check_replica_set(client: AsyncMongoClient[Document], where: str) -> None:
    """Transactions and change streams need a replica set member (one node is enough)."""
    try:
        hello = await client.admin.command("hello")
    except PyMongoError as exc:
        raise ConfigurationError(f"cannot reach MongoDB at {where}: {exc}") from exc
    if "setName" not in hello and hello.get("msg") != "isdbgrid":
        raise ConfigurationError(
            f"the server at {where} is not a replica set member: esmongo needs transactions "
            "and change streams, which need a replica set. A one-node replica set is enough "
            "(start mongod with --replSet rs0 and run rs.initiate())."
        )


class Connection:
    """An open client on the configured database, with the embedded server if one was needed.

    Use as `async with Connection(settings) as conn: ... conn.db ...`.
    """

    def __init__(self, settings: Settings | None = None, **client_options: Any) -> None:
        self.settings = settings or Settings.from_env()
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
        uri = self.uri
        self._client = AsyncMongoClient(uri, **self._client_options)
        try:
            await check_replica_set(self._client, redact(uri))
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
