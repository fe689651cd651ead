"""The FastAPI application factory: health, results, metrics, live frames."""

# No `from __future__ import annotations`: FastAPI resolves dependency annotations at runtime
# and the dependencies here are closures over the service.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.auth import Principal, Role, verify_token
from appliance.live import annotate
from appliance.web.metrics import make_registry

if TYPE_CHECKING:
    from appliance.service import Service


def create_app(service: "Service") -> FastAPI:
    """The console and API for one running service."""
    app = FastAPI(
        title="Vision appliance",
        version="1",
        description="Local console and API of the on-premise vision appliance.",
    )
    app.state.service = service
    registry = make_registry(service.health)

    def principal(request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            return verify_token(service.reader.conn(), token.strip())
        return None

    def require(role: Role) -> Any:
        def check(who: Annotated[Principal | None, Depends(principal)]) -> Principal:
            if who is None:
                raise HTTPException(401, "authentication required", {"WWW-Authenticate": "Bearer"})
            if not who.can(role):
                raise HTTPException(403, f"role {role} or higher required")
            return who

        return check

    @app.get("/api/health", tags=["health"], summary="Service health (no authentication)")
    def health() -> JSONResponse:
        snapshot = service.health()
        code = 503 if snapshot["status"] == "error" else 200
        return JSONResponse(snapshot, status_code=code)

    @app.get("/api/results", tags=["results"], summary="Latest results, newest first")
    def results(
        _: Annotated[Principal, Depends(require("viewer"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        line: Annotated[str | None, Query(max_length=64)] = None,
        verdict: Annotated[str | None, Query(pattern="^(pass|fail|error)$")] = None,
        defect_class: Annotated[str | None, Query(max_length=64)] = None,
        since_ms: Annotated[int | None, Query(ge=0)] = None,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
    ) -> list[dict[str, Any]]:
        return service.reader.recent_results(
            limit,
            line=line,
            verdict=verdict,
            defect_class=defect_class,
            since_ms=since_ms,
            until_ms=until_ms,
        )

    @app.get("/api/parts/{part_id}", tags=["results"], summary="Every revision of one part")
    def part(_: Annotated[Principal, Depends(require("viewer"))], part_id: str) -> list[dict[str, Any]]:
        history = service.reader.part_history(part_id[:200])
        if not history:
            raise HTTPException(404, "no such part")
        return history

    @app.get(
        "/api/live/{camera}.jpg",
        tags=["live"],
        summary="Latest annotated frame of a camera",
        response_class=Response,
    )
    def live_frame(_: Annotated[Principal, Depends(require("viewer"))], camera: str) -> Response:
        snap = service.live.latest(camera[:64])
        if snap is None:
            raise HTTPException(404, "no frame from this camera yet")
        return Response(
            annotate(snap.frame, snap.verdict), media_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def index() -> HTMLResponse:
        snapshot = service.health()
        return HTMLResponse(
            "<!doctype html><title>Vision appliance</title>"
            f"<h1>Vision appliance {service.settings.node_id}</h1>"
            f"<p>Status: {snapshot['status']}. API: <a href='/docs'>/docs</a>, "
            "<a href='/api/health'>/api/health</a>, <a href='/metrics'>/metrics</a>.</p>"
        )

    return app
