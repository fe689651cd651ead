"""The Live page: each camera's annotated image, its last verdict, the shift's counts and yield.

Images are long-polled: `GET /api/live/{camera}.jpg?after=V&wait=S` answers as soon as the
camera has a frame newer than version V (or after S seconds with the current one), so the page
shows every judged frame up to the camera's rate without holding a thread per viewer. The
annotated JPEG of a frame is drawn once however many people watch.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from appliance.results import now_ms
from appliance.web import queries
from appliance.web.alarms import banner
from appliance.web.charts import yield_chart
from appliance.web.deps import Caller, Console, api, console, page
from appliance.web.templating import render

router = APIRouter()
_POLL_S = 0.02
LINE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def cameras(ctx: Console) -> list[dict[str, str]]:
    """Configured cameras with their line, in config order."""
    return [{"id": c.id, "line": line.id} for line in ctx.service.settings.lines for c in line.cameras]


def live_state(ctx: Console) -> dict[str, Any]:
    """What the Live page shows, as JSON."""
    health = ctx.service.health()
    cams = {}
    cam_health = health["components"].get("cameras", {})
    now = now_ms()
    for cam in cameras(ctx):
        snap = ctx.service.live.latest(cam["id"])
        h = cam_health.get(cam["id"], {})
        entry: dict[str, Any] = {
            "line": cam["line"],
            "state": h.get("state", "error"),
            "status": h.get("status"),
            "fps_in": h.get("fps_in"),
            "fps_processed": h.get("fps_processed"),
            "version": None,
        }
        if snap is not None:
            v = snap.verdict
            entry.update(
                version=snap.version,
                part_id=v.part_id,
                verdict=v.verdict,
                defect_class=v.defect_class,
                confidence=round(v.confidence, 4),
                provisional=v.provisional,
                tier=v.tier,
                ts_capture_ms=v.ts_capture_ms,
                age_ms=max(0, now - v.ts_capture_ms),
            )
        cams[cam["id"]] = entry
    lines = [line.id for line in ctx.service.settings.lines]
    return {
        "ts_ms": now,
        "status": health["status"],
        "alarms": banner(health, ctx.service.settings.store.min_free_mb),
        "shift": ctx.shift.snapshot(lines),
        "cameras": cams,
        "recent": queries.results(ctx.read(), limit=12),
        "review_pending": ctx.cached("review_pending", 5.0, lambda: queries.review_pending(ctx.read())),
    }


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def live_page(request: Request, caller: Annotated[Caller, Depends(page("viewer"))]) -> HTMLResponse:
    """Live view of every camera."""
    ctx = console(request)
    return render(
        request, ctx, caller, "live.html", active="live", state=live_state(ctx), cameras=cameras(ctx)
    )


@router.get("/api/live", tags=["live"], summary="Live state: cameras, last verdicts, shift counts, alarms")
def live_json(request: Request, _: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """Everything the Live page shows."""
    return live_state(console(request))


@router.get("/api/alarms", tags=["live"], summary="Active alarms and warnings (the console's banner)")
def alarms(request: Request, _: Annotated[Caller, Depends(api("viewer"))]) -> list[dict[str, Any]]:
    """Alarms first, then warnings."""
    ctx = console(request)
    return banner(ctx.service.health(), ctx.service.settings.store.min_free_mb)


@router.get(
    "/api/shift", tags=["live"], summary="Counts, yield, defect classes and time series of this shift"
)
def shift(request: Request, _: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """Per line, for the current shift (web.shift_starts)."""
    ctx = console(request)
    return ctx.shift.snapshot([line.id for line in ctx.service.settings.lines])


@router.get(
    "/api/live/{camera}.jpg",
    tags=["live"],
    summary="Latest annotated frame of a camera (long-poll with after/wait)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown camera or no frame yet"}},
)
async def live_frame(
    request: Request,
    camera: str,
    _: Annotated[Caller, Depends(api("viewer"))],
    after: Annotated[
        int | None, Query(ge=0, le=2**62, description="Answer once a newer version exists")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=10, description="Longest wait for a newer frame, seconds")] = 0,
) -> Response:
    """The JPEG, with `X-Frame-Version` (pass it back as `after`) and the verdict in headers."""
    ctx = console(request)
    if camera not in {c["id"] for c in cameras(ctx)}:
        raise HTTPException(404, "no such camera")
    deadline = time.monotonic() + wait
    snap = ctx.service.live.latest(camera)
    while (snap is None or (after is not None and snap.version <= after)) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        snap = ctx.service.live.latest(camera)
    if snap is None:
        raise HTTPException(404, "no frame from this camera yet")
    data = await run_in_threadpool(ctx.frames.get, camera, snap)
    return Response(
        data,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Version": str(snap.version),
            "X-Part-Id": snap.frame.part_id,
            "X-Verdict": snap.verdict.verdict,
            "X-Defect-Class": snap.verdict.defect_class or "",
            "X-Confidence": f"{snap.verdict.confidence:.4f}",
            "X-Tier": str(snap.verdict.tier),
            "X-Provisional": "1" if snap.verdict.provisional else "0",
            "X-Capture-Ms": str(snap.frame.ts_capture_ms),
        },
    )


@router.get(
    "/api/charts/yield.svg",
    tags=["charts"],
    summary="Yield and parts per time bucket over the current shift (SVG)",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def yield_svg(
    request: Request,
    _: Annotated[Caller, Depends(api("viewer"))],
    line: Annotated[str, Query(pattern=LINE_ID)],
) -> Response:
    """The chart of one line."""
    ctx = console(request)
    lines = [entry.id for entry in ctx.service.settings.lines]
    if line not in lines:
        raise HTTPException(404, "no such line")
    snap = ctx.shift.snapshot(lines)
    figures = snap["lines"][line]
    title = f"Line {line}, shift {snap['shift']['label']}: yield {_pct(figures['yield'])}"
    svg = yield_chart(figures, snap["bucket_ms"], title=title)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"
