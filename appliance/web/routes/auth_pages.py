"""Login, logout and "who am I"."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from appliance import audit
from appliance.auth import authenticate
from appliance.results import now_ms
from appliance.web.deps import Caller, Console, address, api, console, identify, page_write
from appliance.web.sessions import csrf_matches
from appliance.web.templating import render

router = APIRouter()
LOGIN_CSRF_COOKIE = "appliance_login_csrf"


def safe_next(target: str | None) -> str:
    """A local path to return to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or len(target) > 500:
        return "/"
    return target


def _login_page(
    request: Request,
    ctx: Console,
    *,
    next_: str,
    error: str | None = None,
    status_code: int = 200,
    name: str = "",
) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or len(token) > 100 or not token.isascii():
        token = secrets.token_urlsafe(24)
    response = render(
        request,
        ctx,
        None,
        "login.html",
        status_code=status_code,
        login_csrf=token,
        next=next_,
        error=error,
        name=name,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.tls,
        path="/login",
        max_age=3600,
    )
    return response


@router.get("/login", include_in_schema=False, response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    """The login page (or straight on when already logged in)."""
    ctx = console(request)
    if identify(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, ctx, next_=safe_next(next))


@router.post("/login", include_in_schema=False, response_class=HTMLResponse)
def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=1000)] = "/",  # noqa: A002 - the form field's name
) -> Response:
    """Check the throttle, then the password; start a session or say why not."""
    ctx = console(request)
    target = safe_next(next)
    name = username.strip()[:64]
    where = address(request)
    anonymous = audit.Actor(name or "-", "anonymous", where)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not csrf_matches(cookie, csrf_token):
        return _login_page(
            request,
            ctx,
            next_=target,
            name=name,
            status_code=403,
            error="The login form had expired. Please try again.",
        )
    wait = ctx.guard.address_wait_s(where or "-")
    locked = False
    if not wait and name:
        wait, locked = ctx.guard.name_wait_s(ctx.read(), name)
    if wait:
        ctx.write(
            _audit_op(anonymous, "login", "denied", name, {"reason": "locked" if locked else "throttled"})
        )
        message = (
            f"Too many failed attempts: this account is locked for {_duration(wait)}. An admin can unlock it."
            if locked
            else f"Too many attempts. Please wait {_duration(wait)} and try again."
        )
        response = _login_page(request, ctx, next_=target, name=name, status_code=429, error=message)
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    user, rehash = authenticate(ctx.read(), name, password)
    if user is None:
        now_locked = ctx.write(_failure_op(ctx, anonymous, name))
        error = "Wrong user name or password."
        if now_locked:
            error += f" Too many failures: locked for {_duration(ctx.guard.lockout_ms / 1000)}."
        return _login_page(request, ctx, next_=target, name=name, status_code=401, error=error)
    token, create = ctx.sessions.create_op(user.id, where)
    actor = audit.Actor(user.name, "user", where)

    def op(conn: Any) -> None:
        ctx.guard.success_op(user.name)(conn)
        create(conn)
        conn.execute("UPDATE users SET last_login_ms = ? WHERE id = ?", (now_ms(), user.id))
        if rehash is not None:
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (rehash, user.id))
        audit.record(conn, actor, "login", "ok", target=user.name, details={"role": user.role})

    ctx.write(op)
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(value=token, max_age=ctx.sessions.max_ms // 1000, **ctx.sessions.cookie_args())
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return redirect


@router.post("/logout", include_in_schema=False)
def logout(request: Request, caller: Annotated[Caller, Depends(page_write("viewer"))]) -> Response:
    """End this session."""
    ctx = console(request)
    session = caller.session
    if session is not None:
        end = ctx.sessions.end_op(session.token_sha256)

        def op(conn: Any) -> None:
            end(conn)
            audit.record(conn, caller.actor, "logout", "ok", target=caller.principal.name)

        ctx.write(op)
    response = RedirectResponse("/login", status_code=303)
    args = ctx.sessions.cookie_args()
    response.delete_cookie(args["key"], path="/", secure=args["secure"], httponly=True, samesite="strict")
    return response


@router.get("/api/me", tags=["accounts"], summary="Who the caller is")
def me(caller: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """Name, role and kind (user or token) of the caller."""
    return {"name": caller.principal.name, "role": caller.principal.role, "kind": caller.principal.kind}


def _audit_op(
    actor: audit.Actor, action: str, result: audit.Result, target: str, details: dict[str, Any]
) -> Any:
    def op(conn: Any) -> None:
        audit.record(conn, actor, action, result, target=target or None, details=details)

    return op


def _failure_op(ctx: Console, actor: audit.Actor, name: str) -> Any:
    fail = ctx.guard.failure_op(name) if name else None

    def op(conn: Any) -> bool:
        locked = fail(conn) if fail is not None else False
        audit.record(conn, actor, "login", "failed", target=name or None, details={"locked": locked})
        return locked

    return op


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"
