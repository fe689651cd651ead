"""One part as the console shows it: revisions, labels, image and overlay, label choices."""

from __future__ import annotations

from typing import Any

from appliance.web import images, queries
from appliance.web.deps import Console

PART_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
CLASS_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$"
MAX_CLASSES = 9  # keys 1..9 on the review page


def line_classes(ctx: Console, line: str | None) -> list[str]:
    """Defect classes an operator can pick for a part of `line`: the line's models' labels first."""
    found: list[str] = []
    for config in ctx.service.settings.lines:
        if line is not None and config.id != line:
            continue
        for tier in config.tiers:
            runner = ctx.service.runners.get(tier.model)
            if runner is not None:
                found += runner.manifest.defect_labels
    if line is not None:
        snap = ctx.shift.snapshot([line])
        found += [c["class"] for c in snap["lines"].get(line, {}).get("classes", [])]
    unique = list(dict.fromkeys(c for c in found if c))
    return unique[:MAX_CLASSES] or ["defect"]


def all_classes(ctx: Console) -> list[str]:
    """Defect classes known on this appliance (for the results filter)."""
    found: list[str] = []
    for runner in ctx.service.runners.values():
        found += runner.manifest.defect_labels
    lines = [line.id for line in ctx.service.settings.lines]
    for figures in ctx.shift.snapshot(lines)["lines"].values():
        found += [c["class"] for c in figures["classes"]]
    return sorted(set(found))


def part_view(ctx: Console, part_id: str) -> dict[str, Any] | None:
    """Everything the detail and review pages show about a part, or None when unknown."""
    conn = ctx.read()
    history = ctx.service.reader.part_history(part_id)
    if not history:
        return None
    last = history[-1]
    where = images.locate(ctx.service, part_id)
    return {
        "part_id": part_id,
        "history": history,
        "latest": last,
        "labels": queries.labels_of(conn, part_id),
        "image": where,
        "has_map": where is not None and where.has_map and last["verdict"] == "fail",
        "classes": line_classes(ctx, last["line"]),
    }
