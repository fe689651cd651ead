"""Settings: the effective configuration for everyone, the config file editable by admins.

Every save, and every refused attempt, is audited with a diff. A save takes effect at the next
restart of the service; the page says so while the file differs from what is running.
Credentials never reach a reader: the effective settings are shown with URLs and secret-named
values masked, and the file's text only admins see unmasked (`appliance/web/redact.py`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from appliance import audit
from appliance.web import config_edit
from appliance.web.deps import Caller, Console, api, api_write, console, page, page_write
from appliance.web.redact import redact_settings, redact_text
from appliance.web.templating import render

router = APIRouter()


class SettingsIn(BaseModel):
    """A new config file."""

    model_config = ConfigDict(extra="forbid")

    toml: str = Field(max_length=config_edit.MAX_TEXT, description="The whole config file, TOML")
    dry_run: bool = Field(False, description="Only validate; do not write")


def settings_state(ctx: Console, caller: Caller) -> dict[str, Any]:
    """The effective settings (credentials masked) and the config file (masked but for admins)."""
    service = ctx.service
    text = config_edit.current_text(service)
    return {
        "effective": redact_settings(service.settings.model_dump(mode="json")),
        "file": str(service.config_path) if service.config_path else None,
        "target": str(config_edit.target(service)),
        "embedded_default": service.config_path is None,
        "text": text if caller.can("admin") else redact_text(text),
        "restart_required": config_edit.restart_pending(ctx.service, ctx.config_sha256),
    }


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys (`lines[0].cameras[0].source.kind`) and their values, in order."""
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out += flatten(inner, f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = []
        for index, inner in enumerate(value):
            out += flatten(inner, f"{prefix}[{index}]")
        return out
    return [(prefix, value)]


def sections(effective: dict[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The flattened settings grouped for display: general keys, then one group per table."""
    groups: dict[str, list[tuple[str, Any]]] = {"general": []}
    for key, value in flatten(effective):
        head, sep, rest = key.partition(".")
        if not sep:
            groups["general"].append((key, value))
        else:
            groups.setdefault(head, []).append((rest, value))
    return [(name, rows) for name, rows in groups.items() if rows]


def _apply(ctx: Console, caller: Caller, text: str, dry_run: bool) -> tuple[list[str], bool]:
    """(problems, saved): validate, then (unless dry run) write and audit."""
    path = config_edit.target(ctx.service)
    problems = config_edit.validate(text, path)
    if dry_run:
        return problems, False
    old = config_edit.current_text(ctx.service)
    if problems:
        ctx.write(_audit(caller, "invalid", str(path), {"errors": problems[:20]}))
        return problems, False
    try:
        config_edit.save(text, path)
    except OSError as exc:
        message = f"cannot write {path}: {exc.strerror or exc}"
        ctx.write(_audit(caller, "failed", str(path), {"error": message}))
        return [message], False
    ctx.write(_audit(caller, "ok", str(path), {"diff": config_edit.diff(old, text, path.name)}))
    return [], True


def _audit(caller: Caller, result: audit.Result, target: str, details: dict[str, Any]) -> Any:
    def op(conn: Any) -> None:
        audit.record(conn, caller.actor, "config.update", result, target=target, details=details)

    return op


@router.get("/api/settings", tags=["settings"], summary="Effective configuration and the config file")
def settings_json(request: Request, caller: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """Read-only for everyone, credentials masked (the file's text is unmasked for admins only)."""
    return settings_state(console(request), caller)


@router.put(
    "/api/settings",
    tags=["settings"],
    summary="Replace the config file (admin); validated first, applied at the next restart",
    responses={422: {"description": "the new file is not valid; `detail.errors` says where and why"}},
)
def settings_put(
    request: Request, caller: Annotated[Caller, Depends(api_write("admin"))], body: SettingsIn
) -> Response:
    """200 {"saved", "path", "restart_required"} or 422 {"detail": {"errors": [...]}}."""
    ctx = console(request)
    problems, saved = _apply(ctx, caller, body.toml, body.dry_run)
    if problems:
        raise HTTPException(422, {"errors": problems})
    return JSONResponse(
        {
            "saved": saved,
            "valid": True,
            "path": str(config_edit.target(ctx.service)),
            "restart_required": config_edit.restart_pending(ctx.service, ctx.config_sha256)
            if saved
            else False,
        }
    )


@router.get("/settings", include_in_schema=False, response_class=HTMLResponse)
def settings_page(request: Request, caller: Annotated[Caller, Depends(page("viewer"))]) -> HTMLResponse:
    """The effective settings; the editor for admins."""
    ctx = console(request)
    state = settings_state(ctx, caller)
    return render(
        request,
        ctx,
        caller,
        "settings.html",
        active="settings",
        state=state,
        groups=sections(state["effective"]),
    )


@router.post("/settings", include_in_schema=False, response_class=HTMLResponse)
def settings_form(
    request: Request,
    caller: Annotated[Caller, Depends(page_write("admin"))],
    toml: Annotated[str, Form(max_length=config_edit.MAX_TEXT)],
    action: Annotated[Literal["validate", "save"], Form()] = "validate",
) -> HTMLResponse:
    """Validate or save the edited file and show the outcome."""
    ctx = console(request)
    text = toml.replace("\r\n", "\n")
    problems, saved = _apply(ctx, caller, text, dry_run=action == "validate")
    state = settings_state(ctx, caller)
    if problems or action == "validate":
        state["text"] = text  # keep the admin's edit on the page
    return render(
        request,
        ctx,
        caller,
        "settings.html",
        active="settings",
        state=state,
        groups=sections(state["effective"]),
        problems=problems,
        saved=saved,
        validated=action == "validate" and not problems,
        status_code=422 if problems else 200,
    )
