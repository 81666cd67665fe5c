"""The event type registry (JSON Schema per type and version) and upcasters. Pure: no I/O.

Validators are compiled once per (type, version) and cached: validation sits on the
append path. Each schema gets two: `jsonschema-rs` (compiled Rust, ~100x faster) answers
"is it valid?" for every event, and `jsonschema` (the reference) explains what is wrong
when it is not, and decides whenever the fast one says no or cannot read a value: so an
event is accepted exactly when the reference accepts it, as long as the fast validator
is no more lenient than the reference (tests/test_schema_validators.py checks that).
Upcasters turn an old stored version into the current one on read, chained
(1.0 -> 2.0 -> 3.0); stored documents are never rewritten by them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import jsonschema_rs
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from esmongo.errors import SchemaError, SchemaViolation, UnknownEventTypeError
from esmongo.events import RecordedEvent


@dataclass(frozen=True)
class EventSchema:
    """One entry of the seed's "Event Types Catalog"."""

    event_type: str
    version: str
    schema: Mapping[str, Any]
    description: str = ""
    projections: tuple[str, ...] = ()
    previous_version: str | None = None
    deprecated_at: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "eventType": self.event_type,
            "version": self.version,
            "schema": dict(self.schema),
            "description": self.description,
            "projections": list(self.projections),
            "previousVersion": self.previous_version,
            "deprecatedAt": self.deprecated_at,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> EventSchema:
        return cls(
            event_type=doc["eventType"],
            version=doc["version"],
            schema=doc["schema"],
            description=doc.get("description", ""),
            projections=tuple(doc.get("projections") or ()),
            previous_version=doc.get("previousVersion"),
            deprecated_at=doc.get("deprecatedAt"),
        )


ANNOTATIONS = frozenset({"x-personal"})
"""Keywords that say how a field is stored (esmongo.store.personal), not what is valid: a
schema may gain or lose them without a new version."""


def validated_part(schema: Any) -> Any:
    """The schema without ANNOTATIONS, at any depth: what two schemas must share to
    validate the same events."""
    if isinstance(schema, Mapping):
        return {k: validated_part(v) for k, v in schema.items() if k not in ANNOTATIONS}
    if isinstance(schema, list):
        return [validated_part(item) for item in schema]
    return schema


def compile_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator for the schema's own draft (2020-12 when it names none)."""
    cls = validator_for(schema)
    try:
        cls.check_schema(dict(schema))
    except jsonschema_exceptions.SchemaError as exc:
        raise SchemaError(f"invalid JSON Schema: {exc.message}") from exc
    return cls(dict(schema))


FastCheck = Callable[[Any], bool]


def compile_fast_check(schema: Mapping[str, Any]) -> FastCheck | None:
    """`jsonschema-rs`'s validity check of a schema `compile_validator` accepted; None when
    it cannot compile it (then the reference validator does every check). Formats are
    annotations, as the reference treats them; `$ref`s are never fetched."""
    try:
        return jsonschema_rs.validator_for(
            dict(schema), validate_formats=False, offline=True
        ).is_valid
    except (ValueError, jsonschema_rs.ReferencingError):
        return None


class SchemaRegistry:
    """Known event schemas, their compiled validators, and the strictness rule.

    In strict mode an event whose (type, version) has no schema is refused; otherwise it
    is accepted unvalidated (the seed's opt-in validation).
    """

    def __init__(self, schemas: Iterable[EventSchema] = (), *, strict: bool = False) -> None:
        self.strict = strict
        self._schemas: dict[tuple[str, str], EventSchema] = {}
        self._validators: dict[tuple[str, str], Validator] = {}
        self._fast: dict[tuple[str, str], FastCheck | None] = {}
        for schema in schemas:
            self.add(schema)

    def add(self, schema: EventSchema) -> None:
        """Know one schema. The same JSON Schema again is a no-op (its description,
        projections or deprecation may change); another one for a known (type, version)
        is refused: events validated against the first would no longer match. A change of
        ANNOTATIONS only is taken."""
        key = (schema.event_type, schema.version)
        known = self._schemas.get(key)
        if known is None:
            self._validators[key] = compile_validator(schema.schema)
            self._fast[key] = compile_fast_check(schema.schema)
        elif validated_part(known.schema) != validated_part(schema.schema):
            raise SchemaError(
                f"{schema.event_type} v{schema.version} is already registered with another "
                "JSON Schema; register a new version and an upcaster instead"
            )
        self._schemas[key] = schema

    def get(self, event_type: str, version: str) -> EventSchema | None:
        return self._schemas.get((event_type, version))

    def __iter__(self) -> Any:
        return iter(sorted(self._schemas.values(), key=lambda s: (s.event_type, s.version)))

    def __len__(self) -> int:
        return len(self._schemas)

    def violations(
        self, event_type: str, version: str, data: Mapping[str, Any]
    ) -> list[SchemaViolation]:
        """What is wrong with `data`, empty when valid or unvalidated."""
        validator = self._validators.get((event_type, version))
        if validator is None:
            if self.strict:
                raise UnknownEventTypeError(
                    f"no schema is registered for {event_type} v{version} and strict mode is on"
                )
            return []
        fast = self._fast[(event_type, version)]
        if fast is not None:
            try:
                if fast(data):
                    return []
            except ValueError:
                pass  # a value with no JSON type (a datetime): the reference decides
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        return [
            SchemaViolation(path=e.json_path, rule=str(e.validator), message=e.message)
            for e in errors
        ]


Transform = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class VersionStep(Protocol):
    @property
    def to_version(self) -> str: ...


S = TypeVar("S", bound=VersionStep)


def version_chain(
    steps: Mapping[tuple[str, str], S], event_type: str, version: str
) -> list[S] | None:
    """Follow (type, from version) -> step until none starts where the last one ended.

    Used by upcasters (on read) and migrations (on copy). None when the steps loop.
    """
    chain: list[S] = []
    seen = {version}
    while (step := steps.get((event_type, version))) is not None:
        if step.to_version in seen:
            return None
        seen.add(step.to_version)
        chain.append(step)
        version = step.to_version
    return chain


@dataclass(frozen=True)
class Upcaster:
    event_type: str
    from_version: str
    to_version: str
    transform: Transform


@dataclass
class Upcasters:
    """Chains of per-type version steps, applied lazily on every read path."""

    _steps: dict[tuple[str, str], Upcaster] = field(default_factory=dict)

    def register(
        self, event_type: str, from_version: str, to_version: str, transform: Transform
    ) -> None:
        key = (event_type, from_version)
        if key in self._steps:
            raise SchemaError(
                f"an upcaster from {event_type} v{from_version} is already registered"
            )
        if from_version == to_version:
            raise SchemaError(f"an upcaster of {event_type} must change the version")
        self._steps[key] = Upcaster(event_type, from_version, to_version, transform)
        if self.path(event_type, from_version) is None:
            del self._steps[key]
            raise SchemaError(f"upcasters of {event_type} would loop from v{from_version}")

    def upcaster(
        self, event_type: str, from_version: str, to_version: str
    ) -> Callable[[Transform], Transform]:
        """Decorator form of `register`."""

        def decorate(fn: Transform) -> Transform:
            self.register(event_type, from_version, to_version, fn)
            return fn

        return decorate

    def path(self, event_type: str, version: str) -> list[Upcaster] | None:
        """The steps from `version` to the newest reachable one; None when they loop."""
        return version_chain(self._steps, event_type, version)

    def latest(self, event_type: str, version: str) -> str:
        steps = self.path(event_type, version) or []
        return steps[-1].to_version if steps else version

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        steps = self.path(event.event_type, event.event_version)
        if not steps:
            return event
        data: Mapping[str, Any] = event.data
        for step in steps:
            data = step.transform(data)
        return dataclasses.replace(
            event,
            data=data,
            event_version=steps[-1].to_version,
            upcast_from=event.upcast_from or event.event_version,
        )

    def __bool__(self) -> bool:
        return bool(self._steps)
