"""Jinja2 templates, their filters and the context every page shares (user, CSRF, alarms)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from appliance.results import now_ms
from appliance.web.alarms import banner

if TYPE_CHECKING:
    from appliance.auth import Role
    from appliance.web.deps import Caller, Console

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# (page, path, label, role needed to see it)
NAV: list[tuple[str, str, str, Role]] = [
    ("live", "/", "Live", "viewer"),
    ("results", "/results", "Results", "viewer"),
    ("review", "/review", "Review", "viewer"),
    ("models", "/models", "Models", "viewer"),
    ("health", "/health", "Health", "viewer"),
    ("settings", "/settings", "Settings", "viewer"),
    ("users", "/admin/users", "Users", "admin"),
    ("tokens", "/admin/tokens", "Tokens", "admin"),
    ("audit", "/admin/audit", "Audit", "admin"),
]


def make_templates() -> Jinja2Templates:
    """The console's template set with its filters (autoescaping on)."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    env = templates.env
    env.globals["static_version"] = static_version()
    env.filters["clock"] = clock
    env.filters["stamp"] = stamp
    env.filters["pct"] = pct
    env.filters["ago"] = ago
    env.filters["num"] = num
    env.filters["plain"] = plain
    return templates


def render(
    request: Request,
    ctx: Console,
    caller: Caller | None,
    template: str,
    *,
    active: str = "",
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """Render a page with the shared context."""
    health = ctx.service.health()
    context = {
        "caller": caller,
        "csrf": caller.session.csrf if caller and caller.session else "",
        "node_id": ctx.service.settings.node_id,
        "nav": [item for item in NAV if caller is None or caller.can(item[3])],
        "active": active,
        "alarms": banner(health, ctx.service.settings.store.min_free_mb) if caller else [],
        "status": health["status"],
        **values,
    }
    return ctx.templates.TemplateResponse(request, template, context, status_code=status_code)


def static_version() -> str:
    """A short hash of the static files, so that browsers fetch them again after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def clock(ms: int | None) -> str:
    """Epoch ms as local HH:MM:SS."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%H:%M:%S")


def stamp(ms: int | None) -> str:
    """Epoch ms as local YYYY-MM-DD HH:MM:SS."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def pct(value: float | None, digits: int = 1) -> str:
    """0.987 -> '98.7 %'; None -> '-'."""
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def ago(ms: int | None) -> str:
    """How long ago, in words short enough for a table cell."""
    if not ms:
        return "never"
    seconds = max(0, (now_ms() - ms) / 1000)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def num(value: Any, digits: int = 1) -> str:
    """Numbers rounded for display; anything else as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def plain(value: Any) -> str:
    """A config value as written: '-' for unset, yes/no for booleans, the rest unformatted."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
