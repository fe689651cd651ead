"""Prometheus exposition, read from the service's health snapshot at scrape time.

Besides the health figures: per-tier inference latency histograms (`appliance_inference_latency_ms`),
escalation rates, the outbox depth (results the broker has not acknowledged, from SQLite), the
sync lag when a sync component reports its last success, and every numeric figure of other
components (MQTT, sync...) as `appliance_component_value{component, key}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class HealthCollector(Collector):
    """Turns the health dict into metrics (no second set of counters to keep in sync)."""

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], outbox: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.snapshot = snapshot
        self.outbox = outbox

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
        rate = GaugeMetricFamily(
            "appliance_tier_escalation_rate",
            "Share of this tier's verdicts escalated to the next tier",
            labels=["line", "tier", "model"],
        )
        latency = HistogramMetricFamily(
            "appliance_inference_latency_ms",
            "Inference latency of verdicts decided at each tier (ms, cumulative over the ladder)",
            labels=["line", "tier", "model"],
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
                rate.add_metric(labels, tier.get("escalation_rate", 0.0))
                hist = tier.get("latency_hist")
                if hist:
                    latency.add_metric(labels, _cumulative(hist), hist["sum_ms"])
        yield from (parts, missed, backlog, open_prov, judged, escal, service, agree, rate, latency)

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
        kept = components.get("inference", {}).get("pending_frames")
        if kept:
            yield GaugeMetricFamily(
                "appliance_pending_frames_held",
                "Frames of deferred escalations held in memory",
                value=kept["held"],
            )
            for key, help_text in (
                ("written", "Frames of deferred escalations written to disk"),
                ("write_failed", "Frames of deferred escalations that could not be written"),
            ):
                yield CounterMetricFamily(f"appliance_pending_frames_{key}", help_text, value=kept[key])
        for name, value in health.get("metrics", {}).items():
            yield GaugeMetricFamily(f"appliance_{name}", name.replace("_", " "), value=value)
        if self.outbox is not None:
            box = self.outbox()
            yield GaugeMetricFamily(
                "appliance_outbox_depth",
                "Results not yet acknowledged by the broker (counted up to 100000)",
                value=box["unpublished"],
            )
            if box["oldest_unpublished_age_s"] is not None:
                yield GaugeMetricFamily(
                    "appliance_outbox_oldest_age_seconds",
                    "Age of the oldest result the broker has not acknowledged",
                    value=box["oldest_unpublished_age_s"],
                )
        sync = components.get("sync")
        if isinstance(sync, dict):
            last = next((sync[k] for k in _SYNC_LAST_KEYS if isinstance(sync.get(k), int | float)), None)
            if last is not None:
                lag = max(0.0, time.time() - last / 1000.0)
                yield GaugeMetricFamily(
                    "appliance_sync_lag_seconds", "Time since the last successful sync", value=lag
                )
        values = GaugeMetricFamily(
            "appliance_component_value",
            "Numeric figures reported by components (MQTT, sync, web...)",
            labels=["component", "key"],
        )
        for name, comp in components.items():
            if name in {"cameras", "ladders", "store", "inference"} or not isinstance(comp, dict):
                continue
            for key, value in comp.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.add_metric([name, key], float(value))
        yield values


_SYNC_LAST_KEYS = ("last_success_ms", "last_sync_ms", "last_synced_ms")


def _cumulative(hist: dict[str, Any]) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, +Inf last) from per-bucket counts."""
    out, running = [], 0
    for bound, count in zip([*hist["le_ms"], float("inf")], hist["counts"], strict=True):
        running += count
        out.append((floatToGoString(bound), float(running)))  # type: ignore[no-untyped-call]  # prometheus_client: untyped
    return out


def _flatten_components(components: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for name, comp in components.items():
        if isinstance(comp, dict) and "state" in comp:
            yield name, comp
        elif isinstance(comp, dict):
            for sub, inner in comp.items():
                if isinstance(inner, dict) and "state" in inner:
                    yield f"{name}/{sub}", inner


def make_registry(
    snapshot: Callable[[], dict[str, Any]], outbox: Callable[[], dict[str, Any]] | None = None
) -> CollectorRegistry:
    """A registry of its own per app (no global state between services or tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(snapshot, outbox))
    return registry
