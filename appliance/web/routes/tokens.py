"""Admin: the API bearer tokens (list, revoke); created with `appliance token create` on the box.

A token's secret is shown once, by the command line that made it; the console never sees it.
Every revocation, and every refused attempt, is audited.
"""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from appliance import audit
from appliance.auth import AccountError, ApiToken, list_tokens, revoke_tokens
from appliance.results import now_ms
from appliance.web.deps import Caller, Console, api, api_write, console, page, page_write
from appliance.web.templating import render

router = APIRouter()
TokenId = Annotated[int, Path(ge=1, le=2**62)]


def tokens_state(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every token, newest first, as the API shows it."""
    now = now_ms()
    return [t.to_json(now) for t in reversed(list_tokens(conn))]


def _revoke(ctx: Console, caller: Caller, token_id: int) -> list[ApiToken]:
    """Revoke one token on the writer thread with its audit entry; AccountError when refused."""

    def op(conn: sqlite3.Connection) -> list[ApiToken]:
        revoked = revoke_tokens(conn, str(token_id))
        for t in revoked:
            audit.record(conn, caller.actor, "token.revoke", "ok", target=t.name, details={"id": t.id})
        return revoked

    try:
        return ctx.write(op)
    except AccountError as exc:
        ctx.write(_refused(caller, str(token_id), str(exc)))
        raise


def _refused(caller: Caller, target: str, reason: str) -> Any:
    def op(conn: sqlite3.Connection) -> None:
        audit.record(conn, caller.actor, "token.revoke", "invalid", target=target, details={"reason": reason})

    return op


@router.get("/api/tokens", tags=["accounts"], summary="API tokens (admin)")
def tokens_json(request: Request, _: Annotated[Caller, Depends(api("admin"))]) -> list[dict[str, Any]]:
    """Id, name, role, created_ms, state (active|ended), expires_ms or ended_ms; never a secret."""
    return tokens_state(console(request).read())


@router.post(
    "/api/tokens/{token_id}/revoke",
    tags=["accounts"],
    summary="Revoke an API token (admin); it is refused from now on",
    responses={404: {"description": "no such token"}, 409: {"description": "already ended"}},
)
def tokens_revoke(
    request: Request, caller: Annotated[Caller, Depends(api_write("admin"))], token_id: TokenId
) -> dict[str, Any]:
    """The token as it is now (`state: ended`)."""
    try:
        (revoked,) = _revoke(console(request), caller, token_id)
    except AccountError as exc:
        raise HTTPException(404 if "no token" in str(exc) else 409, str(exc)) from exc
    return revoked.to_json()


@router.get("/admin/tokens", include_in_schema=False, response_class=HTMLResponse)
def tokens_page(
    request: Request, caller: Annotated[Caller, Depends(page("admin"))], done: str | None = None
) -> HTMLResponse:
    """The tokens table with a revoke button per active token."""
    return _tokens_page(request, console(request), caller, done=(done or "")[:200])


@router.post("/admin/tokens", include_in_schema=False)
def tokens_page_post(
    request: Request,
    caller: Annotated[Caller, Depends(page_write("admin"))],
    token_id: Annotated[int, Form(ge=1, le=2**62)],
    action: Annotated[Literal["revoke"], Form()] = "revoke",
) -> Response:
    """Revoke; errors are shown on the page."""
    ctx = console(request)
    try:
        _revoke(ctx, caller, token_id)
    except AccountError as exc:
        return _tokens_page(request, ctx, caller, error=str(exc), status_code=422)
    return RedirectResponse(f"/admin/tokens?done={action}+{token_id}", status_code=303)


def _tokens_page(request: Request, ctx: Console, caller: Caller, **extra: Any) -> HTMLResponse:
    tokens = tokens_state(ctx.read())
    return render(request, ctx, caller, "tokens.html", active="tokens", tokens=tokens, **extra)
