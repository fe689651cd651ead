"""Who is calling, what they may do, and the shared state every route needs.

A caller is identified by an API bearer token (machines) or a session cookie (people). API
routes answer 401/403 in JSON; page routes send people to the login page or show a
"not allowed" page. Every state-changing route depends on `api_write` or `page_write`, which
also check the session's CSRF token (bearer-token callers need none); a test walks the
routes to make sure no state-changing route goes without.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from appliance.audit import Actor
from appliance.auth import Principal, Role, verify_token
from appliance.web.images import AnnotatedCache
from appliance.web.login import LoginGuard
from appliance.web.sessions import CSRF_FIELD, CSRF_HEADER, Session, SessionStore, csrf_matches
from appliance.web.shift import ShiftStats

if TYPE_CHECKING:
    from appliance.service import Service

WRITE_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass
class Console:
    """Everything the routes share, built once per app by `create_app`."""

    service: Service
    templates: Jinja2Templates
    sessions: SessionStore
    guard: LoginGuard
    shift: ShiftStats
    tls: bool
    config_sha256: str | None
    frames: AnnotatedCache = field(default_factory=AnnotatedCache)
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def read(self) -> sqlite3.Connection:
        """This thread's read connection."""
        return self.service.reader.conn()

    def cached(self, key: str, ttl_s: float, compute: Callable[[], Any]) -> Any:
        """`compute()`, reused for `ttl_s` seconds (figures every live view polls each second)."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl_s:
            return hit[1]
        value = compute()
        self._cache[key] = (now, value)
        return value

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` on the writer thread and wait for its result (or its exception)."""
        result: T = self.service.writer.call(op).result(timeout=WRITE_TIMEOUT_S)  # op's own result
        return result


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated principal, its session (people only) and where it called from."""

    principal: Principal
    session: Session | None
    address: str | None

    @property
    def actor(self) -> Actor:
        """The audit log's view of this caller."""
        return Actor(self.principal.name, self.principal.kind, self.address)

    def can(self, role: Role) -> bool:
        """Role check, for templates."""
        return self.principal.can(role)


class LoginRequired(Exception):
    """A page needs a logged-in user; the handler redirects to the login page."""


class PageForbidden(Exception):
    """A logged-in user lacks the role for a page or action."""

    def __init__(self, needed: Role) -> None:
        super().__init__(needed)
        self.needed = needed


def console(request: Request) -> Console:
    """The app's shared state."""
    ctx: Console = request.app.state.console  # set by create_app (starlette's State is untyped)
    return ctx


def address(request: Request) -> str | None:
    """The client's address as seen by this server."""
    return request.client.host if request.client else None


def identify(request: Request) -> Caller | None:
    """The caller from a bearer token or session cookie (cached on the request)."""
    if hasattr(request.state, "caller"):
        cached: Caller | None = request.state.caller
        return cached
    ctx = console(request)
    caller = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        principal = verify_token(ctx.read(), token.strip())
        if principal is not None:
            caller = Caller(principal, None, address(request))
    else:
        cookie = request.cookies.get(ctx.sessions.cookie_name)
        session = ctx.sessions.lookup(cookie) if cookie else None
        if session is not None:
            caller = Caller(session.principal, session, address(request))
    request.state.caller = caller
    return caller


def api(role: Role) -> Callable[[Request], Caller]:
    """Dependency for API reads: 401 without credentials, 403 below `role`."""

    def check(request: Request) -> Caller:
        caller = identify(request)
        if caller is None:
            raise HTTPException(401, "authentication required", {"WWW-Authenticate": "Bearer"})
        if not caller.principal.can(role):
            raise HTTPException(403, f"role {role} or higher required")
        return caller

    return check


def api_write(role: Role) -> Callable[[Request], Awaitable[Caller]]:
    """Dependency for API changes: as `api`, plus the CSRF token when called with a session."""
    read_check = api(role)

    async def check(request: Request) -> Caller:
        caller = read_check(request)
        if caller.session is not None and not await _csrf_ok(request, caller.session):
            raise HTTPException(403, "CSRF token missing or wrong (reload the page)")
        return caller

    return check


def page(role: Role) -> Callable[[Request], Caller]:
    """Dependency for pages: redirect to login without a session, 'not allowed' below `role`."""

    def check(request: Request) -> Caller:
        caller = identify(request)
        if caller is None:
            raise LoginRequired
        if not caller.principal.can(role):
            raise PageForbidden(role)
        return caller

    return check


def page_write(role: Role) -> Callable[[Request], Awaitable[Caller]]:
    """Dependency for form posts: as `page`, plus the CSRF token."""
    read_check = page(role)

    async def check(request: Request) -> Caller:
        caller = read_check(request)
        if caller.session is not None and not await _csrf_ok(request, caller.session):
            raise HTTPException(403, "CSRF token missing or wrong (reload the page and try again)")
        return caller

    return check


async def _csrf_ok(request: Request, session: Session) -> bool:
    given: object = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        given = form.get(CSRF_FIELD)
    return csrf_matches(session.csrf, given)
