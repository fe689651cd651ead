"""Models: each line's ladder, the loaded packages with versions and metrics, rollout state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from appliance.web.deps import Caller, Console, api, console, page
from appliance.web.templating import render

router = APIRouter()
ROLLOUT_COMPONENTS = ("rollout", "models")  # whichever name the rollout work registers under


def models_state(ctx: Console) -> dict[str, Any]:
    """Ladders per line, manifests per model, and the rollout component's state when there is one."""
    service = ctx.service
    lines = []
    for line in service.settings.lines:
        ladder = service.ladders.get(line.id)
        lines.append(
            {
                "line": line.id,
                "deadline_ms": line.deadline_ms,
                "configured": [t.model for t in line.tiers],
                "ladder": ladder.health() if ladder is not None else None,
            }
        )
    models = {}
    for name, runner in service.runners.items():
        m = runner.manifest
        models[name] = {
            "name": m.name,
            "version": m.version,
            "kind": m.kind,
            "sha256": m.sha256,
            "input": m.input.model_dump(),
            "labels": m.labels,
            "threshold": m.threshold,
            "uncertain_band": list(m.uncertain_band),
            "synthetic": m.synthetic,
            "metrics": m.metrics,
            "training": m.training,
            "provenance": m.provenance,
            "providers": runner.providers,
            "path": str(runner.package.path),
        }
    rollout = None
    for name in ROLLOUT_COMPONENTS:
        component = service.components.get(name)
        if component is not None:
            try:
                rollout = {"component": name, **component.health()}
            except Exception as exc:  # a component's health must not break the page
                rollout = {"component": name, "state": "error", "last_error": str(exc)}
            break
    return {"lines": lines, "models": models, "rollout": rollout}


@router.get(
    "/api/models", tags=["models"], summary="Ladders, loaded models (versions, metrics), rollout state"
)
def models_json(request: Request, _: Annotated[Caller, Depends(api("viewer"))]) -> dict[str, Any]:
    """`rollout` is null until a model rollout component exists on this appliance."""
    return models_state(console(request))


@router.get("/models", include_in_schema=False, response_class=HTMLResponse)
def models_page(request: Request, caller: Annotated[Caller, Depends(page("viewer"))]) -> HTMLResponse:
    """The ladder and model cards."""
    ctx = console(request)
    return render(request, ctx, caller, "models.html", active="models", state=models_state(ctx))
