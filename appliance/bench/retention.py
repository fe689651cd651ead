"""What keeping frames on disk (`sync.images.retain`) costs the pipeline's maximum.

The default keeps every fail, and the bench's sources fail far more often than a line: one part
in five on the simulator, one in four of the tile photos. So the configured retention is a large
part of the pipeline's overhead on them, and how large depends on the storage: creating a file
costs 20 us to 1 ms of kernel CPU by folder and by the minute on the development VM
(docs/performance.md, "Kept images on this VM"). Paired windows, as for publishing: the
pipeline's maximum as configured against the same without kept images.
"""

from __future__ import annotations

from typing import Any

from appliance.bench.delivery import paired_costs
from appliance.bench.phases import BenchContext, Delivery

KEEPER_THREADS = ("sync-keeper",)


def retention_figures(ctx: BenchContext) -> dict[str, Any]:
    """The throughput and CPU that the configured image retention costs at the maximum."""
    images = ctx.settings.sync.images
    if images.retain == "none":
        return {"retention": "none", "retention_note": "no frames kept (sync.images.retain = none)"}
    without = Delivery(sync={"images": images.model_copy(update={"retain": "none"})})
    cost = paired_costs(
        ctx, f"keeping images ({images.retain})", {"kept": Delivery()}, KEEPER_THREADS, base_delivery=without
    )["kept"]
    keeper = cost["components"].get("images") or {}
    saved, dropped = keeper.get("saved", 0), keeper.get("dropped", 0)
    return {
        "retention": images.retain,
        "pipeline_fps_no_retention": cost["base_fps"],
        "retention_cost": cost["cost"],
        "retention_cost_rounds": cost["costs"],
        "retention_cpu_ms_per_part": cost["cpu_ms_per_part"],
        "retention_kernel_cpu_ms_per_part": cost["kernel_cpu_ms_per_part"],
        "retention_keeper_cpu_share": cost["cpu_share"],
        # At the maximum the keeper (a lower-priority thread) drops frames rather than hold
        # inspection back: the cost above is with this share of the frames due written.
        "retention_written_share": saved / (saved + dropped) if saved + dropped else None,
        "cpu_ms_per_part_by_thread_retention": cost["by_thread"],
        "cpu_ms_per_part_by_thread_no_retention": cost["base_by_thread"],
    }
