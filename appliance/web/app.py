"""The FastAPI application factory: the operator console (pages) and its JSON API.

Pages are rendered on the server (Jinja2) with one small static script; the API under `/api`
serves everything the pages show, described by the OpenAPI document at `/openapi.json` (and
readable at `/docs`). Authentication: session cookies for people, bearer tokens for machines;
see `appliance.web.deps`. Hardening: `appliance.web.security`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.web import deps
from appliance.web.config_edit import file_sha256
from appliance.web.deps import Console, LoginRequired, PageForbidden
from appliance.web.login import LoginGuard
from appliance.web.routes import (
    admin,
    auth_pages,
    docs,
    health,
    live,
    models,
    results,
    review,
    settings,
    tokens,
)
from appliance.web.security import BodyLimit, SecurityHeaders
from appliance.web.sessions import SessionStore
from appliance.web.shift import ShiftStats
from appliance.web.templating import make_templates, render

if TYPE_CHECKING:
    from appliance.service import Service

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def create_app(service: Service) -> FastAPI:
    """The console and API for one running service."""
    web = service.settings.web
    tls = web.tls_cert is not None
    app = FastAPI(
        title="Vision appliance",
        version="1",
        description=(
            "Local console and API of the on-premise vision appliance. Authenticate with "
            "`Authorization: Bearer <token>` (`appliance token create NAME --role ROLE`); "
            "`GET /api/health` and `GET /metrics` are open."
        ),
        docs_url=None,
        redoc_url=None,
    )
    ctx = Console(
        service=service,
        templates=make_templates(),
        sessions=SessionStore(
            service.reader.conn,
            service.writer.call,
            idle_minutes=web.session_idle_minutes,
            max_hours=web.session_max_hours,
            tls=tls,
        ),
        guard=LoginGuard(web),
        shift=ShiftStats(service.reader.conn, web.shift_starts),
        tls=tls,
        config_sha256=file_sha256(service.config_path),
    )
    app.state.console = ctx
    app.state.service = service
    for module in (auth_pages, live, results, review, models, health, settings, admin, tokens, docs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _handlers(app)
    # The last added is the outermost: headers go on every answer, the 413 of the cap included.
    app.add_middleware(BodyLimit, limit=web.max_body_bytes)
    app.add_middleware(SecurityHeaders, tls=tls)
    return app


def _handlers(app: FastAPI) -> None:
    def is_api(request: Request) -> bool:
        """JSON errors for the API and for scripts; pages for people (browsers ask for HTML)."""
        api_path = request.url.path.startswith(("/api/", "/metrics", "/openapi.json"))
        return api_path or "text/html" not in request.headers.get("accept", "")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(PageForbidden)
    async def forbidden(request: Request, exc: PageForbidden) -> Response:
        ctx = deps.console(request)
        return render(
            request,
            ctx,
            deps.identify(request),
            "error.html",
            status_code=403,
            title="Not allowed",
            message=f"This needs the {exc.needed} role or higher. Ask an admin if you need it.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request):
            return await http_exception_handler(request, exc)
        ctx = deps.console(request)
        titles = {404: "Not found", 403: "Not allowed", 401: "Please log in"}
        return render(
            request,
            ctx,
            deps.identify(request),
            "error.html",
            status_code=exc.status_code,
            title=titles.get(exc.status_code, "Error"),
            message=str(exc.detail),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if is_api(request):
            return await request_validation_exception_handler(request, exc)
        ctx = deps.console(request)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return render(
            request,
            ctx,
            deps.identify(request),
            "error.html",
            status_code=400,
            title="Bad request",
            message=problems,
        )
