"""Server-sent events: the framing, and a loop that ends when the browser goes away."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

KEEPALIVE = ": keep-alive\n\n"


def frame(data: Any, event: str | None = None, id: int | None = None) -> str:
    lines = []
    if event:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def stream(request: Request, frames: AsyncIterator[str]) -> StreamingResponse:
    async def until_gone() -> AsyncIterator[str]:
        try:
            async for chunk in frames:
                if await request.is_disconnected():
                    return
                yield chunk
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                await close()

    return StreamingResponse(
        until_gone(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
