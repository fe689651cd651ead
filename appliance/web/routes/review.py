"""The review queue: hard cases nobody has labelled yet, one at a time, one click or key each."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from appliance.web import queries
from appliance.web.deps import Caller, api, console, page
from appliance.web.parts import PART_ID, part_view
from appliance.web.routes.live import LINE_ID
from appliance.web.templating import render

router = APIRouter()


@router.get("/api/review", tags=["review"], summary="Hard cases waiting for an operator's label")
def review_json(
    request: Request,
    _: Annotated[Caller, Depends(api("viewer"))],
    line: Annotated[str | None, Query(pattern=LINE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Newest first, one entry per part, with its latest result; label with POST /api/parts/{id}/labels."""
    conn = console(request).read()
    return {
        "pending": queries.review_pending(conn, line),
        "cases": queries.review_queue(conn, limit=limit, line=line, offset=offset),
    }


@router.get("/review", include_in_schema=False, response_class=HTMLResponse)
def review_page(
    request: Request,
    caller: Annotated[Caller, Depends(page("viewer"))],
    line: Annotated[str | None, Query(pattern=r"^$|" + LINE_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    labelled: Annotated[str | None, Query(pattern=r"^$|" + PART_ID)] = None,
) -> HTMLResponse:
    """The current case large, the next ones small."""
    ctx = console(request)
    conn = ctx.read()
    line = line or None
    cases = queries.review_queue(conn, limit=7, line=line, offset=offset)
    current = part_view(ctx, cases[0]["part_id"]) if cases else None
    return render(
        request,
        ctx,
        caller,
        "review.html",
        active="review",
        case=cases[0] if cases else None,
        part=current,
        upcoming=cases[1:],
        pending=queries.review_pending(conn, line),
        offset=offset,
        line=line or "",
        lines=[entry.id for entry in ctx.service.settings.lines],
        labelled=labelled or None,
    )
