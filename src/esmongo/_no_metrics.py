"""Instruments that record nothing, for a core install without prometheus-client.

Only the service exposes metrics (`esmongo[service]` brings the client), so a library user
without it loses nothing by these; they take the same arguments as the real ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class _Instrument:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        **options: Any,
    ) -> None:
        self._name = name

    def labels(self, *values: Any, **named: Any) -> _Instrument:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class Counter(_Instrument):
    pass


class Gauge(_Instrument):
    pass


class Histogram(_Instrument):
    pass
