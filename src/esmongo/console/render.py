"""Templates (Jinja2, autoescaped) and the helpers the pages share."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from esmongo.console.access import Viewer

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.autoescape = True  # every template, whatever its name ends with


NOTICES = {
    "rebuild": "Rebuild started.",
    "replay": "Replay started.",
    "retried": "Dead letter retried: the event was applied.",
    "discarded": "Dead letter discarded.",
    "retried-all": "Every dead letter shown was retried.",
    "discarded-all": "Every dead letter shown was discarded.",
    "logged-out": "Logged out.",
}
"""Notices a redirect may name in `?notice=`: fixed texts, so a link cannot make the
console say something else."""


def _text(value: Any) -> str:
    """Dates and decimals as text; bytes (an encrypted field's nonce and ciphertext) as
    base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def pretty(value: Any) -> str:
    """JSON for people: indented, dates and decimals as text."""
    return json.dumps(value, indent=2, sort_keys=True, default=_text, ensure_ascii=False)


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_text, ensure_ascii=False)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


templates.env.filters["pretty"] = pretty
templates.env.filters["when"] = when
templates.env.filters["compact"] = compact


def page(
    request: Request, template: str, viewer: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    context.setdefault("title", "")
    return templates.TemplateResponse(
        request,
        template,
        {
            "viewer": viewer,
            "csrf": viewer.session.csrf if viewer else "",
            "notice": NOTICES.get(request.query_params.get("notice", ""), ""),
            **context,
        },
        status_code=status,
    )
