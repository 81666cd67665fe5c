"""Personal fields: encrypted before the chain hashes an event, decrypted on every read.

Which fields: a property of an event schema annotated `"x-personal": true` (at any depth of
`properties`), and the metadata's PERSONAL_METADATA (`userName`, `ipAddress`, `userAgent`).

Whose (the data subject, whose key encrypts the field):
- a data field: the stream (`<aggregateType>/<aggregateId>`), unless its annotation names
  a data field holding a user id, `"x-personal": {"subject": "ownerId"}`: then that user
  (`user:<ownerId>`), so that forgetting a person reaches their fields in every stream;
- a metadata field: the user who made the event (`user:<userId>` from the metadata), else
  the stream.

Stored form of an encrypted value: `{"_enc": "aes-gcm", "key": <data key id>, "n": <nonce>,
"c": <ciphertext>}` where the ciphertext is AES-256-GCM over the BSON document `{"v": value}`
with the event id and the field's path as associated data (a ciphertext moved to another
event or field does not open). Schemas validate the clear value, before encryption; the
chain (esmongo.store.chain) hashes the stored form, so it still verifies after an erasure.

After the subject's key is deleted (esmongo.store.data_keys.DataKeys.forget) the field reads
as REDACTED, everywhere the store's reads go: API, projections and their rebuilds, time
travel, the console.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.binary import Binary

from esmongo.codec import CODEC_OPTIONS
from esmongo.errors import EsmongoError
from esmongo.events import NewEvent, RecordedEvent
from esmongo.schema.registry import SchemaRegistry
from esmongo.store.data_keys import NONCE_BYTES, DataKeys, invalid_tag
from esmongo.store.requests import AppendRequest

REDACTED = "[redacted]"
"""What a personal field reads as once its subject was forgotten."""
MARKER = "_enc"
ALGORITHM = "aes-gcm"
PERSONAL_METADATA = ("userName", "ipAddress", "userAgent")
ANNOTATION = "x-personal"

Path = tuple[str, ...]


@dataclass(frozen=True)
class PersonalField:
    """A personal property of an event type: where in `data`, and which data field (if
    any) holds the user id of its subject."""

    path: Path
    subject_field: str | None = None


def personal_fields(schema: Mapping[str, Any], prefix: Path = ()) -> tuple[PersonalField, ...]:
    """The properties annotated personal, at any depth of nested `properties`."""
    found: list[PersonalField] = []
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return ()
    for name, spec in properties.items():
        if not isinstance(spec, Mapping):
            continue
        mark = spec.get(ANNOTATION)
        if mark is True:
            found.append(PersonalField((*prefix, name)))
        elif isinstance(mark, Mapping) and isinstance(mark.get("subject"), str):
            found.append(PersonalField((*prefix, name), mark["subject"]))
        else:
            found.extend(personal_fields(spec, (*prefix, name)))
    return tuple(found)


def stream_subject(aggregate_type: str, aggregate_id: str) -> str:
    return f"{aggregate_type}/{aggregate_id}"


def user_subject(user_id: Any) -> str:
    return f"user:{user_id}"


def is_sealed(value: Any) -> bool:
    """Whether a stored value is an encrypted personal field."""
    return isinstance(value, Mapping) and value.get(MARKER) == ALGORITHM


class CorruptCiphertext(EsmongoError):
    """An encrypted field whose key exists does not decrypt: it was altered."""

    code = "corrupt_ciphertext"


@dataclass(frozen=True)
class Sealed:
    """Requests with their personal fields encrypted, and the clear events they came
    from (by event id), so that the append returns clear events without decrypting."""

    requests: list[AppendRequest]
    clear: dict[str, NewEvent]

    def reveal(self, event: RecordedEvent) -> RecordedEvent:
        original = self.clear.get(event.event_id)
        if original is None:
            return event
        return dataclasses.replace(
            event, data=original.data, metadata={**event.metadata, **original.metadata}
        )


class PersonalData:
    """Seals personal fields on append and opens them on read, for one store."""

    def __init__(
        self,
        keys: DataKeys,
        registry: SchemaRegistry,
        metadata_fields: Sequence[str] = PERSONAL_METADATA,
    ) -> None:
        self.keys = keys
        self.registry = registry
        self.metadata_fields = tuple(metadata_fields)
        self._fields: dict[tuple[str, str], tuple[object, tuple[PersonalField, ...]]] = {}

    def fields(self, event_type: str, version: str) -> tuple[PersonalField, ...]:
        """The personal fields of a type's version, as its schema registered now says."""
        key = (event_type, version)
        schema = self.registry.get(event_type, version)
        cached = self._fields.get(key)
        if cached is not None and cached[0] is schema:
            return cached[1]
        found = personal_fields(schema.schema) if schema is not None else ()
        self._fields[key] = (schema, found)
        return found

    # ---- append ---------------------------------------------------------------------

    async def seal(self, requests: Sequence[AppendRequest]) -> Sealed | None:
        """The requests with personal fields encrypted; None when none has any, or when
        no master key is configured and this database never encrypted (clear, as before)."""
        if not any(self._personal(r, e) for r in requests for e in r.events):
            return None
        if self.keys.master is None and not await self.keys.in_use():
            return None
        sealed: list[AppendRequest] = []
        clear: dict[str, NewEvent] = {}
        for request in requests:
            events = []
            for event in request.events:
                if self._personal(request, event):
                    clear[event.event_id] = event
                    event = await self._seal_event(request, event)
                events.append(event)
            sealed.append(dataclasses.replace(request, events=events))
        return Sealed(sealed, clear)

    def _personal(self, request: AppendRequest, event: NewEvent) -> bool:
        if any(event.metadata.get(name) is not None for name in self.metadata_fields):
            return True
        return any(
            _get(event.data, f.path) is not None
            for f in self.fields(event.event_type, event.event_version)
        )

    async def _seal_event(self, request: AppendRequest, event: NewEvent) -> NewEvent:
        stream = stream_subject(request.aggregate_type, request.aggregate_id)
        data: dict[str, Any] = dict(event.data)
        for personal in self.fields(event.event_type, event.event_version):
            value = _get(data, personal.path)
            if value is None:
                continue
            subject = stream
            if personal.subject_field is not None:
                owner = data.get(personal.subject_field)
                if owner is not None:
                    subject = user_subject(owner)
            where = "data." + ".".join(personal.path)
            sealed = await self._encrypt(subject, value, event.event_id, where)
            data = _set(data, personal.path, sealed)
        metadata = dict(event.metadata)
        user = metadata.get("userId")
        subject = user_subject(user) if user is not None else stream
        for name in self.metadata_fields:
            if metadata.get(name) is not None:
                sealed = await self._encrypt(subject, metadata[name], event.event_id, name)
                metadata[name] = sealed
        return dataclasses.replace(event, data=data, metadata=metadata)

    async def _encrypt(self, subject: str, value: Any, event_id: str, where: str) -> dict[str, Any]:
        key_id, cipher = await self.keys.for_subject(subject)
        nonce = os.urandom(NONCE_BYTES)
        plain = bson.encode({"v": value}, codec_options=CODEC_OPTIONS)
        return {
            MARKER: ALGORITHM,
            "key": key_id,
            "n": Binary(nonce),
            "c": Binary(cipher.encrypt(nonce, plain, _context(event_id, where))),
        }

    # ---- read -----------------------------------------------------------------------

    async def prefetch(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Load the data keys a batch of stored events needs, in one read."""
        ids: set[str] = set()
        for doc in docs:
            for part in (doc.get("data"), doc.get("metadata")):
                if isinstance(part, dict):
                    ids.update(_key_ids(part))
        if ids:
            await self.keys.load(ids)

    async def reveal(self, event: RecordedEvent) -> RecordedEvent:
        """The event with every encrypted field decrypted, or REDACTED when its key is
        gone; the same object when it holds none."""
        data_paths = _sealed_paths(event.data)
        metadata_paths = _sealed_paths(event.metadata)
        if not data_paths and not metadata_paths:
            return event
        data: Mapping[str, Any] = event.data
        for path in data_paths:
            value = await self._decrypt(_get(data, path), event, "data." + ".".join(path))
            data = _set(data, path, value)
        metadata: Mapping[str, Any] = event.metadata
        for path in metadata_paths:
            value = await self._decrypt(_get(metadata, path), event, ".".join(path))
            metadata = _set(metadata, path, value)
        return dataclasses.replace(event, data=data, metadata=metadata)

    async def _decrypt(self, sealed: Mapping[str, Any], event: RecordedEvent, where: str) -> Any:
        cipher = await self.keys.opener(str(sealed["key"]))
        if cipher is None:
            return REDACTED
        try:
            plain = cipher.decrypt(
                bytes(sealed["n"]), bytes(sealed["c"]), _context(event.event_id, where)
            )
        except invalid_tag() as exc:
            raise CorruptCiphertext(
                f"{where} of event #{event.sequence} ({event.event_id}) does not decrypt "
                "with its data key: it was altered after it was written (esmongo verify)"
            ) from exc
        return bson.decode(plain, codec_options=CODEC_OPTIONS)["v"]


def _context(event_id: str, where: str) -> bytes:
    return f"{event_id}\x1f{where}".encode()


def _get(doc: Mapping[str, Any], path: Path) -> Any:
    value: Any = doc
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _set(doc: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `doc` with `value` at `path` (copies along the path only)."""
    copy = dict(doc)
    head, *rest = path
    copy[head] = _set(copy.get(head) or {}, tuple(rest), value) if rest else value
    return copy


def _sealed_paths(doc: Mapping[str, Any], prefix: Path = ()) -> list[Path]:
    """Where the encrypted values are. Documents read from BSON are dicts: checked as
    such, on every event of every read (an ABC's isinstance costs several times more)."""
    found: list[Path] = []
    for name, value in doc.items():
        if isinstance(value, dict):
            if value.get(MARKER) == ALGORITHM:
                found.append((*prefix, name))
            else:
                found.extend(_sealed_paths(value, (*prefix, name)))
    return found


def _key_ids(doc: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in doc.values():
        if isinstance(value, dict):
            if value.get(MARKER) == ALGORITHM:
                found.append(str(value["key"]))
            else:
                found.extend(_key_ids(value))
    return found
