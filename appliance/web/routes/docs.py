"""`/docs`: the API described from the OpenAPI document, rendered here (the box has no internet
for Swagger UI's CDN, and the CSP allows no third-party scripts). Open to everyone, like the
document itself at `/openapi.json`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from appliance.web.deps import console, identify
from appliance.web.templating import render

router = APIRouter()
METHODS = ("get", "post", "put", "patch", "delete")


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Operations grouped by tag, in the order of the document."""
    out = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [
                {
                    "name": p["name"],
                    "in": p["in"],
                    "required": p.get("required", False),
                    "description": p.get("description") or p.get("schema", {}).get("description", ""),
                }
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            out.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "tag": (op.get("tags") or ["other"])[0],
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "params": params,
                    "body": body.get("$ref", "").rsplit("/", 1)[-1] if body else None,
                }
            )
    return out


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    """The API reference."""
    ctx = console(request)
    spec = request.app.openapi()
    schemas = spec.get("components", {}).get("schemas", {})
    return render(
        request,
        ctx,
        identify(request),
        "docs.html",
        active="",
        ops=operations(spec),
        schemas={
            k: v for k, v in schemas.items() if not k.startswith(("HTTPValidationError", "ValidationError"))
        },
        description=spec.get("info", {}).get("description", ""),
    )
