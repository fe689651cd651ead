"""Results: the filtered list, a part's detail (image, overlay, revisions, labels), labelling."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from appliance.web import images, queries
from appliance.web.deps import Caller, Console, api, api_write, console, page, page_write
from appliance.web.parts import CLASS_NAME, PART_ID, all_classes, part_view
from appliance.web.routes.live import LINE_ID
from appliance.web.shift import current_window
from appliance.web.templating import render

router = APIRouter()
PartId = Annotated[str, Path(pattern=PART_ID, description="The part's id")]
Period = Literal["hour", "shift", "today", "24h", "7d", "all", "custom"]
MAX_MS = 2**62


class LabelIn(BaseModel):
    """An operator's judgement of a part."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["pass", "fail"] = Field(description="pass = good part, fail = defective")
    defect_class: str | None = Field(
        None, pattern=CLASS_NAME, description="Defect class (fail only); default 'defect'"
    )


@router.get("/api/results", tags=["results"], summary="Latest results, newest first")
def results_json(
    request: Request,
    _: Annotated[Caller, Depends(api("viewer"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    line: Annotated[str | None, Query(pattern=LINE_ID)] = None,
    verdict: Annotated[Literal["pass", "fail", "error"] | None, Query()] = None,
    defect_class: Annotated[str | None, Query(pattern=CLASS_NAME)] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=MAX_MS)] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=MAX_MS)] = None,
    before_seq: Annotated[
        int | None, Query(ge=1, le=MAX_MS, description="Page back: results older than this seq")
    ] = None,
) -> list[dict[str, Any]]:
    """The same objects as the MQTT result payload (`vision.result/1`)."""
    return queries.results(
        console(request).read(),
        limit=limit,
        line=line,
        verdict=verdict,
        defect_class=defect_class,
        since_ms=since_ms,
        until_ms=until_ms,
        before_seq=before_seq,
    )


@router.get("/api/parts/{part_id}", tags=["results"], summary="Every revision of one part, oldest first")
def part_json(
    request: Request, _: Annotated[Caller, Depends(api("viewer"))], part_id: PartId
) -> list[dict[str, Any]]:
    """Revision 0 is the first answer; later revisions refine it."""
    history = console(request).service.reader.part_history(part_id)
    if not history:
        raise HTTPException(404, "no such part")
    return history


@router.get(
    "/api/parts/{part_id}/image.jpg",
    tags=["results"],
    summary="The part's frame (retained on disk or still in the recent-frames ring)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "image not retained"}},
)
def part_image(request: Request, _: Annotated[Caller, Depends(api("viewer"))], part_id: PartId) -> Response:
    """The frame as JPEG; `X-Image-Source` says retained or recent."""
    found = images.load(console(request).service, part_id)
    if found is None:
        raise HTTPException(404, "image not retained")
    return Response(
        images.jpeg(found.image), media_type="image/jpeg", headers={"X-Image-Source": found.source}
    )


@router.get(
    "/api/parts/{part_id}/map.png",
    tags=["results"],
    summary="The part's defect map as a translucent red PNG (to lay over the image)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no defect map"}},
)
def part_map(request: Request, _: Annotated[Caller, Depends(api("viewer"))], part_id: PartId) -> Response:
    """At the map's own resolution; stretch it over the frame."""
    found = images.load(console(request).service, part_id)
    if found is None or found.defect_map is None or found.defect_map.ndim != 2:
        raise HTTPException(404, "no defect map for this part")
    return Response(images.heat_png(found.defect_map), media_type="image/png")


@router.get("/api/parts/{part_id}/labels", tags=["review"], summary="Operators' labels of a part")
def labels_json(
    request: Request, _: Annotated[Caller, Depends(api("viewer"))], part_id: PartId
) -> list[dict[str, Any]]:
    """Oldest first; the last one counts."""
    return queries.labels_of(console(request).read(), part_id)


@router.post(
    "/api/parts/{part_id}/labels",
    tags=["review"],
    summary="Label a part good or defective (operator); a disagreement is a dispute",
    status_code=201,
)
def label_json(
    request: Request,
    caller: Annotated[Caller, Depends(api_write("operator"))],
    part_id: PartId,
    body: LabelIn,
) -> dict[str, Any]:
    """Stores the label (synced as training data) and audits it."""
    return _label(console(request), caller, part_id, body.verdict, body.defect_class)


@router.post("/results/{part_id}/label", include_in_schema=False)
def label_form(
    request: Request,
    caller: Annotated[Caller, Depends(page_write("operator"))],
    part_id: PartId,
    verdict: Annotated[Literal["pass", "fail"], Form()],
    defect_class: Annotated[str | None, Form(pattern=CLASS_NAME)] = None,
    back: Annotated[Literal["review", "detail"], Form()] = "detail",
    line: Annotated[str | None, Form(pattern=LINE_ID)] = None,
) -> Response:
    """The one-click buttons of the detail and review pages."""
    _label(console(request), caller, part_id, verdict, defect_class)
    target = f"/results/{part_id}?labelled=1"
    if back == "review":
        target = "/review?labelled=" + part_id + (f"&line={line}" if line else "")
    return RedirectResponse(target, status_code=303)


def _label(
    ctx: Console, caller: Caller, part_id: str, verdict: str, defect_class: str | None
) -> dict[str, Any]:
    cls = (defect_class or "defect") if verdict == "fail" else None
    try:
        return ctx.write(queries.label_op(part_id, verdict, cls, caller.actor))
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc


def period_range(
    period: Period, since: datetime | None, until: datetime | None, starts: list[str]
) -> tuple[int | None, int | None]:
    """(since_ms, until_ms) for a period name, or the custom range."""
    now = datetime.now().astimezone()
    if period == "custom":
        return (_ms(since), _ms(until))
    if period == "shift":
        window = current_window(starts, now)
        return window.start_ms, None
    if period == "today":
        return _ms(now.replace(hour=0, minute=0, second=0, microsecond=0)), None
    delta = {"hour": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}.get(period)
    return (_ms(now - delta) if delta else None), None


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # a datetime-local field: the box's local time
        return max(0, min(MAX_MS, int(moment.timestamp() * 1000)))
    except (OverflowError, OSError, ValueError):  # year 1 or 9999 in some time zone
        return None


@router.get("/results", include_in_schema=False, response_class=HTMLResponse)
def results_page(
    request: Request,
    caller: Annotated[Caller, Depends(page("viewer"))],
    line: Annotated[str | None, Query(pattern=r"^$|" + LINE_ID)] = None,
    verdict: Annotated[Literal["", "pass", "fail", "error"], Query()] = "",
    defect_class: Annotated[str | None, Query(pattern=r"^$|" + CLASS_NAME)] = None,
    period: Annotated[Period, Query()] = "shift",
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_MS)] = None,
) -> HTMLResponse:
    """Filterable list of results, newest first, 50 a page."""
    ctx = console(request)
    since_ms, until_ms = period_range(period, since, until, ctx.service.settings.web.shift_starts)
    rows = queries.results(
        ctx.read(),
        limit=50,
        line=line or None,
        verdict=verdict or None,
        defect_class=defect_class or None,
        since_ms=since_ms,
        until_ms=until_ms,
        before_seq=before_seq,
    )
    filters = {
        "line": line or "",
        "verdict": verdict,
        "defect_class": defect_class or "",
        "period": period,
        "since": since.strftime("%Y-%m-%dT%H:%M") if since else "",
        "until": until.strftime("%Y-%m-%dT%H:%M") if until else "",
    }
    older = None
    if len(rows) == 50:
        query = {k: v for k, v in filters.items() if v}
        query["before_seq"] = str(rows[-1]["seq"])
        older = query
    return render(
        request,
        ctx,
        caller,
        "results.html",
        active="results",
        rows=rows,
        filters=filters,
        older=older,
        lines=[entry.id for entry in ctx.service.settings.lines],
        classes=all_classes(ctx),
    )


@router.get("/results/{part_id}", include_in_schema=False, response_class=HTMLResponse)
def part_page(
    request: Request,
    caller: Annotated[Caller, Depends(page("viewer"))],
    part_id: PartId,
    labelled: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    """A part: image with its defect overlay, every revision, labels, and the label buttons."""
    ctx = console(request)
    view = part_view(ctx, part_id)
    if view is None:
        raise HTTPException(404, f"No result for part {part_id} (it may have been removed by retention).")
    return render(request, ctx, caller, "part.html", active="results", part=view, labelled=bool(labelled))
