"""The alarm banner: active alarms from the event bus plus conditions read from health.

The event bus carries what components raise themselves (camera lost, drift...). Some
conditions only show in health figures (disk low, results dropped by retention before they were
delivered, a component in error), so the banner derives those too, once, without repeating an
alarm the bus already has.
"""

from __future__ import annotations

from typing import Any

Banner = list[dict[str, Any]]


def banner(health: dict[str, Any], min_free_mb: float) -> Banner:
    """Alarms (red) first, then warnings (amber); each with kind, message and since_ms."""
    out: Banner = []
    covered_cameras = set()
    for alarm in health.get("alarms", []):
        out.append(_entry("alarm", alarm["kind"], alarm["message"], alarm.get("ts_ms")))
        if alarm.get("camera"):
            covered_cameras.add(alarm["camera"])
    components = health.get("components", {})
    store = components.get("store", {})
    if store:
        free = store.get("disk_free_mb")
        if isinstance(free, int | float) and free < min_free_mb:
            out.append(_entry("alarm", "disk_low", f"Disk low: {free:.0f} MB free for results and images"))
        if store.get("dropped_unpublished"):
            out.append(
                _entry(
                    "alarm",
                    "outbox_dropping",
                    f"Outbox dropping: {store['dropped_unpublished']} results were deleted by retention "
                    "before the broker received them",
                )
            )
        if store.get("state") == "error":
            out.append(_entry("alarm", "store_error", f"Result store failed: {store.get('last_error')}"))
        elif store.get("last_error"):
            out.append(_entry("warning", "store_retrying", f"Result store retrying: {store['last_error']}"))
    for cam_id, cam in components.get("cameras", {}).items():
        if cam.get("state") != "ok" and cam_id not in covered_cameras:
            severity = "alarm" if cam.get("state") == "error" else "warning"
            detail = cam.get("last_error") or cam.get("status")
            out.append(_entry(severity, "camera", f"Camera {cam_id}: {detail}"))
    for name, comp in components.items():
        if name in {"cameras", "ladders", "store"} or not isinstance(comp, dict):
            continue
        state = comp.get("state")
        if state in {"error", "degraded"}:
            detail = comp.get("last_error") or comp.get("status") or state
            out.append(_entry("alarm" if state == "error" else "warning", name, f"{name}: {detail}"))
    for line_id, ladder in components.get("ladders", {}).items():
        if ladder.get("state") == "degraded":
            out.append(
                _entry("warning", "ladder", f"Line {line_id}: many inference errors ({ladder.get('errors')})")
            )
    out.sort(key=lambda a: 0 if a["severity"] == "alarm" else 1)
    return out


def _entry(severity: str, kind: str, message: str, since_ms: int | None = None) -> dict[str, Any]:
    return {"severity": severity, "kind": kind, "message": message, "since_ms": since_ms}
