"""Health: cameras, inference, ladder latency, outbox, broker and cloud, disk; events; metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.web import queries
from appliance.web.charts import latency_chart
from appliance.web.deps import Caller, Console, api, console, page
from appliance.web.metrics import make_registry
from appliance.web.routes.live import LINE_ID
from appliance.web.templating import render

router = APIRouter()
CORE = ("cameras", "inference", "ladders", "store")


@router.get(
    "/api/health",
    tags=["health"],
    summary="Service health (no authentication)",
    responses={503: {"description": "status error"}},
)
def health_json(request: Request) -> JSONResponse:
    """`status` ok|degraded|error and each component's state; HTTP 503 when the status is error."""
    snapshot = console(request).service.health()
    return JSONResponse(snapshot, status_code=503 if snapshot["status"] == "error" else 200)


@router.get(
    "/metrics", tags=["health"], summary="Prometheus metrics (no authentication)", response_class=Response
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    ctx = console(request)
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        registry = make_registry(ctx.service.health, lambda: queries.outbox(ctx.read()))
        request.app.state.registry = registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/events", tags=["health"], summary="Recent events (camera lost, recovered, model switched...)"
)
def events(
    request: Request,
    _: Annotated[Caller, Depends(api("viewer"))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[dict[str, Any]]:
    """Newest first."""
    return [e.to_json() for e in console(request).service.events.recent(limit)]


@router.get("/api/outbox", tags=["health"], summary="Results not yet acknowledged by the broker")
def outbox(request: Request, _: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """Count (capped at 100000) and the oldest one's age."""
    return queries.outbox(console(request).read())


@router.get(
    "/api/charts/latency.svg",
    tags=["charts"],
    summary="Inference latency histogram per tier of a line (SVG)",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def latency_svg(
    request: Request,
    _: Annotated[Caller, Depends(api("viewer"))],
    line: Annotated[str, Query(pattern=LINE_ID)],
) -> Response:
    """Share of verdicts per latency bucket since start."""
    ladder = console(request).service.ladders.get(line)
    if ladder is None:
        raise HTTPException(404, "no such line")
    svg = latency_chart(ladder.health()["tiers"], title=f"Line {line}: inference latency per tier")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


def health_view(ctx: Console) -> dict[str, Any]:
    """The health document plus what the page adds (outbox from SQLite, other components)."""
    snapshot = ctx.service.health()
    components = snapshot["components"]
    others = {name: comp for name, comp in components.items() if name not in CORE}
    return {
        "health": snapshot,
        "outbox": queries.outbox(ctx.read()),
        "others": others,
        "mqtt_enabled": ctx.service.settings.mqtt.enabled,
        "sync_target": ctx.service.settings.sync.target,
        "min_free_mb": ctx.service.settings.store.min_free_mb,
    }


@router.get("/health", include_in_schema=False, response_class=HTMLResponse)
def health_page(request: Request, caller: Annotated[Caller, Depends(page("viewer"))]) -> HTMLResponse:
    """Everything an engineer checks first."""
    ctx = console(request)
    view = health_view(ctx)
    return render(
        request,
        ctx,
        caller,
        "health.html",
        active="health",
        view=view,
        events=[e.to_json() for e in ctx.service.events.recent(30)],
    )
