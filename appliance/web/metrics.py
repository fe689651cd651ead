"""Prometheus exposition, read from the service's health snapshot at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


class HealthCollector(Collector):
    """Turns the health dict into metrics (no second set of counters to keep in sync)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        """Metrics for one scrape."""
        health = self.snapshot()
        components = health.get("components", {})
        up = GaugeMetricFamily(
            "appliance_component_ok",
            "1 when the component is ok, 0.5 degraded, 0 error",
            labels=["component"],
        )
        for name, comp in _flatten_components(components):
            up.add_metric([name], {"ok": 1.0, "degraded": 0.5}.get(comp.get("state", "error"), 0.0))
        yield up

        frames_in = CounterMetricFamily("appliance_frames_in", "Frames grabbed", labels=["line", "camera"])
        frames_done = CounterMetricFamily(
            "appliance_frames_processed", "Frames handed to inference", labels=["line", "camera"]
        )
        dropped = CounterMetricFamily(
            "appliance_frames_dropped", "Frames skipped by the drop policy", labels=["line", "camera"]
        )
        corrupt = CounterMetricFamily(
            "appliance_frames_corrupt", "Corrupt frames skipped", labels=["line", "camera"]
        )
        for cam_id, cam in components.get("cameras", {}).items():
            labels = [cam["line"], cam_id]
            frames_in.add_metric(labels, cam["frames_in"])
            frames_done.add_metric(labels, cam["frames_processed"])
            dropped.add_metric(labels, cam["dropped"])
            corrupt.add_metric(labels, cam["corrupt"])
        yield from (frames_in, frames_done, dropped, corrupt)

        parts = CounterMetricFamily("appliance_parts", "Parts judged", labels=["line"])
        missed = CounterMetricFamily(
            "appliance_deadline_missed", "First verdicts later than the deadline", labels=["line"]
        )
        backlog = GaugeMetricFamily(
            "appliance_ladder_backlog", "Parts waiting for a later tier", labels=["line"]
        )
        open_prov = GaugeMetricFamily(
            "appliance_provisional_open", "Provisional verdicts not yet final", labels=["line"]
        )
        judged = CounterMetricFamily(
            "appliance_tier_judged", "Frames judged per tier", labels=["line", "tier", "model"]
        )
        escal = CounterMetricFamily(
            "appliance_tier_escalated", "Frames escalated per tier", labels=["line", "tier", "model"]
        )
        service = GaugeMetricFamily(
            "appliance_tier_service_ms",
            "Service time estimate per tier (ms)",
            labels=["line", "tier", "model"],
        )
        agree = GaugeMetricFamily(
            "appliance_tier_agreement", "Agreement rate with the next tier", labels=["line", "tier", "model"]
        )
        for line_id, ladder in components.get("ladders", {}).items():
            parts.add_metric([line_id], ladder["parts"])
            missed.add_metric([line_id], ladder["deadline_missed"])
            backlog.add_metric([line_id], ladder["backlog"])
            open_prov.add_metric([line_id], ladder["provisional_open"])
            for tier in ladder["tiers"]:
                labels = [line_id, str(tier["tier"]), tier["model"]]
                judged.add_metric(labels, tier["judged"])
                escal.add_metric(labels, tier["escalated"])
                service.add_metric(labels, tier["service_ms"])
                if tier["agreement_with_next"] is not None:
                    agree.add_metric(labels, tier["agreement_with_next"])
        yield from (parts, missed, backlog, open_prov, judged, escal, service, agree)

        store = components.get("store", {})
        if store:
            yield GaugeMetricFamily(
                "appliance_store_last_seq", "Highest committed seq", value=store["last_seq"]
            )
            yield GaugeMetricFamily(
                "appliance_store_backlog", "Results waiting for the writer", value=store["backlog"]
            )
            yield GaugeMetricFamily(
                "appliance_disk_free_mb", "Free disk under the state dir (MB)", value=store["disk_free_mb"]
            )
        for name, value in health.get("metrics", {}).items():
            yield GaugeMetricFamily(f"appliance_{name}", name.replace("_", " "), value=value)


def _flatten_components(components: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for name, comp in components.items():
        if isinstance(comp, dict) and "state" in comp:
            yield name, comp
        elif isinstance(comp, dict):
            for sub, inner in comp.items():
                if isinstance(inner, dict) and "state" in inner:
                    yield f"{name}/{sub}", inner


def make_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry of its own per app (no global state between services or tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(snapshot))
    return registry
