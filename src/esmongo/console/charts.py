"""Charts as inline SVG drawn on the server: no chart library, nothing for the CSP to allow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: str
    """The polyline's `points` attribute."""
    low: float
    high: float


def polyline(
    values: Sequence[float], width: int = 240, height: int = 40, xs: Sequence[float] | None = None
) -> Chart:
    """`values` scaled into the box (y grows downwards); `xs` place them (default: evenly)."""
    if not values:
        return Chart(width, height, "", 0.0, 0.0)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    if xs is None:
        xs = list(range(len(values)))
    x0, x1 = min(xs), max(xs)
    xspan = (x1 - x0) or 1.0
    pad = 2.0
    coords = []
    for x, y in zip(xs, values, strict=True):
        px = pad + (x - x0) / xspan * (width - 2 * pad)
        py = height - pad - (y - low) / span * (height - 2 * pad)
        coords.append(f"{px:.1f},{py:.1f}")
    return Chart(width, height, " ".join(coords), low, high)


def steps(values: Sequence[float], xs: Sequence[float]) -> tuple[list[float], list[float]]:
    """A balance holds until the next movement: each point repeated at the next x."""
    out_x: list[float] = []
    out_y: list[float] = []
    for i, (x, y) in enumerate(zip(xs, values, strict=True)):
        if i:
            out_x.append(x)
            out_y.append(values[i - 1])
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y
