"""Admin: users (add, role, password reset, unlock, disable) and the audit log."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from appliance import audit
from appliance.auth import (
    PASSWORD_MAX,
    USER_PATTERN,
    AccountError,
    Role,
    add_user,
    count_admins,
    get_user,
    list_users,
    login_subject,
    update_user,
)
from appliance.results import now_ms
from appliance.web.deps import Caller, Console, api, api_write, console, page, page_write
from appliance.web.templating import render

router = APIRouter()
UserName = Annotated[str, Path(pattern=USER_PATTERN)]
ACTION = r"^[a-z][a-z0-9_.]{0,63}$"


class UserIn(BaseModel):
    """A new console user."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=USER_PATTERN)
    role: Role
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class UserPatch(BaseModel):
    """Changes to a user; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    password: str | None = Field(None, min_length=1, max_length=PASSWORD_MAX)
    disabled: bool | None = None
    unlock: bool = Field(False, description="Clear failed-login backoff and lockout")


def users_state(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Users with their lockout state."""
    now = now_ms()
    out = []
    for user in list_users(conn):
        row = conn.execute(
            "SELECT failures, locked_until_ms FROM login_failures WHERE subject = ?",
            (login_subject(user.name),),
        ).fetchone()
        locked = row is not None and row["locked_until_ms"] is not None and row["locked_until_ms"] > now
        out.append(
            {
                **user.to_json(),
                "failed_logins": row["failures"] if row else 0,
                "locked_until_ms": row["locked_until_ms"] if locked else None,
            }
        )
    return out


def _change(
    ctx: Console, caller: Caller, name: str, patch: UserPatch, *, create: str | None = None
) -> dict[str, Any]:
    """Apply a user change on the writer thread with its audit entry; AccountError on refusal."""
    action = "user.add" if create is not None else "user.update"

    def op(conn: sqlite3.Connection) -> dict[str, Any]:
        if create is not None:
            assert patch.role is not None
            added = add_user(conn, name, patch.role, create)
            audit.record(conn, caller.actor, action, "ok", target=added.name, details={"role": added.role})
            return added.to_json()
        user = get_user(conn, name)
        if user is None:
            raise LookupError(f"no user {name!r}")
        losing_admin = user.role == "admin" and (
            (patch.role is not None and patch.role != "admin") or patch.disabled is True
        )
        if losing_admin and not user.disabled and count_admins(conn) <= 1:
            raise AccountError("this is the last admin: add another admin first")
        if patch.disabled and user.name.lower() == caller.principal.name.lower():
            raise AccountError("you cannot disable your own account")
        updated = update_user(conn, name, role=patch.role, password=patch.password, disabled=patch.disabled)
        if patch.unlock:
            conn.execute("DELETE FROM login_failures WHERE subject = ?", (login_subject(user.name),))
        changes = {
            "role": patch.role,
            "password_reset": True if patch.password is not None else None,
            "disabled": patch.disabled,
            "unlock": patch.unlock or None,
        }
        details = {k: v for k, v in changes.items() if v is not None}
        audit.record(conn, caller.actor, action, "ok", target=updated.name, details=details)
        return updated.to_json()

    try:
        return ctx.write(op)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except AccountError as exc:
        ctx.write(_refused(caller, action, name, str(exc)))
        raise


def _refused(caller: Caller, action: str, target: str, reason: str) -> Any:
    def op(conn: sqlite3.Connection) -> None:
        audit.record(conn, caller.actor, action, "invalid", target=target, details={"reason": reason})

    return op


# --- API ------------------------------------------------------------------------------------


@router.get("/api/users", tags=["accounts"], summary="Console users (admin)")
def users_json(request: Request, _: Annotated[Caller, Depends(api("admin"))]) -> list[dict[str, Any]]:
    """Names, roles, last login, lockout; never password hashes."""
    return users_state(console(request).read())


@router.post("/api/users", tags=["accounts"], summary="Add a console user (admin)", status_code=201)
def users_add(
    request: Request, caller: Annotated[Caller, Depends(api_write("admin"))], body: UserIn
) -> dict[str, Any]:
    """409 when the name exists, 422 when the password is too weak."""
    try:
        return _change(console(request), caller, body.name, UserPatch(role=body.role), create=body.password)
    except AccountError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from exc


@router.patch(
    "/api/users/{name}", tags=["accounts"], summary="Change a user's role, password, lock or state (admin)"
)
def users_patch(
    request: Request, caller: Annotated[Caller, Depends(api_write("admin"))], name: UserName, body: UserPatch
) -> dict[str, Any]:
    """Resetting the password or disabling ends the user's sessions."""
    try:
        return _change(console(request), caller, name, body)
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/api/audit", tags=["accounts"], summary="The audit log, newest first (admin)")
def audit_json(
    request: Request,
    _: Annotated[Caller, Depends(api("admin"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    action: Annotated[str | None, Query(pattern=ACTION)] = None,
    actor: Annotated[str | None, Query(pattern=USER_PATTERN)] = None,
    result: Annotated[Literal["ok", "denied", "invalid", "failed"] | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Who, what, when (ts_ms), from where (address), result, details."""
    return audit.entries(
        console(request).read(), limit=limit, before_id=before_id, action=action, actor=actor, result=result
    )


# --- pages ----------------------------------------------------------------------------------


@router.get("/admin/users", include_in_schema=False, response_class=HTMLResponse)
def users_page(
    request: Request, caller: Annotated[Caller, Depends(page("admin"))], done: str | None = None
) -> HTMLResponse:
    """The users table and the add-user form."""
    return _users_page(request, console(request), caller, done=(done or "")[:200])


@router.post("/admin/users", include_in_schema=False)
def users_page_post(
    request: Request,
    caller: Annotated[Caller, Depends(page_write("admin"))],
    name: Annotated[str, Form(max_length=200)],
    action: Annotated[Literal["add", "role", "password", "unlock", "disable", "enable"], Form()],
    role: Annotated[Role | None, Form()] = None,
    password: Annotated[str | None, Form(max_length=PASSWORD_MAX)] = None,
) -> Response:
    """One form per action; errors are shown on the page."""
    ctx = console(request)
    try:
        if action == "add":
            _change(ctx, caller, name, UserPatch(role=role or "viewer"), create=password or "")
        else:
            patch = {
                "role": UserPatch(role=role),
                "password": UserPatch(password=password or None),
                "unlock": UserPatch(unlock=True),
                "disable": UserPatch(disabled=True),
                "enable": UserPatch(disabled=False, unlock=True),
            }[action]
            if action == "password" and not password:
                raise AccountError("type the new password")
            _change(ctx, caller, name, patch)
    except AccountError as exc:
        return _users_page(request, ctx, caller, error=f"{name}: {exc}", status_code=422)
    return RedirectResponse(f"/admin/users?done={action}+{name}", status_code=303)


def _users_page(request: Request, ctx: Console, caller: Caller, **extra: Any) -> HTMLResponse:
    users = users_state(ctx.read())
    return render(request, ctx, caller, "users.html", active="users", users=users, **extra)


@router.get("/admin/audit", include_in_schema=False, response_class=HTMLResponse)
def audit_page(
    request: Request,
    caller: Annotated[Caller, Depends(page("admin"))],
    action: Annotated[str | None, Query(pattern=r"^$|" + ACTION)] = None,
    actor: Annotated[str | None, Query(pattern=r"^$|" + USER_PATTERN)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    """The audit log, 100 a page."""
    ctx = console(request)
    entries = audit.entries(
        ctx.read(), limit=100, before_id=before_id, action=action or None, actor=actor or None
    )
    return render(
        request,
        ctx,
        caller,
        "audit.html",
        active="audit",
        entries=entries,
        filters={"action": action or "", "actor": actor or ""},
        older=entries[-1]["id"] if len(entries) == 100 else None,
    )
