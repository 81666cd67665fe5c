"""A backup's files, in mongodump's layout, and loading them back: what backup and restore
of the main log (esmongo.ops.backup) and of logs of their own (esmongo.ops.backup.own_logs) share.

`<dir>/<db>/<collection>.bson` (concatenated BSON documents, kept as their exact bytes)
and `<collection>.metadata.json` (its indexes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from esmongo.codec import Document
from esmongo.errors import EsmongoError

BATCH = 1000
DUPLICATE_KEY = 11000
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


class BackupError(EsmongoError):
    """A backup or restore could not be made safely."""


def raw_db(db: AsyncDatabase[Document]) -> AsyncDatabase[RawBSONDocument]:
    """The same database, documents kept as their exact BSON bytes."""
    return cast(
        "AsyncDatabase[RawBSONDocument]", db.client.get_database(db.name, codec_options=RAW)
    )


def batches(path: Path) -> Iterator[list[RawBSONDocument]]:
    """The documents of a .bson file, a batch at a time (the file may be large)."""
    with open(path, "rb") as file:
        batch: list[RawBSONDocument] = []
        for doc in bson.decode_file_iter(file, RAW):
            batch.append(doc)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def checksum_update(digest: Any, doc: RawBSONDocument) -> None:
    digest.update(f"{doc['sequence']}|{doc['eventId']}|{doc['aggregateId']}\n".encode())


async def write_metadata(db: AsyncDatabase[Document], name: str, target: Path) -> None:
    """`<name>.metadata.json`: the collection's indexes, as mongodump writes them."""
    indexes = [ix async for ix in await db[name].list_indexes()]
    metadata = {"indexes": indexes, "collectionName": name}
    (target / f"{name}.metadata.json").write_text(json_util.dumps(metadata))


async def create_indexes(db: AsyncDatabase[Document], name: str, source: Path) -> None:
    """The indexes `<name>.metadata.json` lists, if the backup has that file."""
    meta_file = source / f"{name}.metadata.json"
    if not meta_file.exists():
        return
    metadata = json_util.loads(meta_file.read_text())
    models = []
    for spec in metadata.get("indexes", []):
        if spec.get("name") == "_id_":
            continue
        options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
        models.append(IndexModel(list(spec["key"].items()), **options))
    if models:
        await db[name].create_indexes(models)


async def insert(
    raw: AsyncDatabase[RawBSONDocument], name: str, batch: list[RawBSONDocument], *, log: bool
) -> int:
    """Insert a batch; outside the logs, entries already there (same unique key) are kept."""
    if log:
        await raw[name].insert_many(batch, ordered=True)
        return len(batch)
    try:
        await raw[name].insert_many(batch, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(batch) - len(errors)
    return len(batch)


def source_of(directory: Path) -> Path:
    """The folder holding the .bson files: `directory` itself or its one database folder."""
    if any(directory.glob("*.bson")):
        return directory
    folders = [p for p in directory.iterdir() if p.is_dir()] if directory.exists() else []
    if len(folders) == 1 and any(folders[0].glob("*.bson")):
        return folders[0]
    raise BackupError(f"no backup found in {directory}")
