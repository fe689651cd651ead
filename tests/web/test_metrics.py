"""Prometheus exposition from a health snapshot: histograms, escalation rate, outbox, components."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from appliance.web.metrics import make_registry

HEALTH: dict[str, Any] = {
    "components": {
        "cameras": {},
        "ladders": {
            "l1": {
                "parts": 10,
                "deadline_missed": 0,
                "backlog": 0,
                "provisional_open": 0,
                "tiers": [
                    {
                        "tier": 1,
                        "model": "m1",
                        "judged": 10,
                        "escalated": 3,
                        "escalation_rate": 0.3,
                        "service_ms": 2.0,
                        "agreement_with_next": None,
                        "latency_hist": {"le_ms": [1, 5], "counts": [4, 5, 1], "sum_ms": 30.0},
                    }
                ],
            }
        },
        "store": {"last_seq": 10, "backlog": 0, "disk_free_mb": 1000.0},
        "sync": {"state": "ok", "backlog": 7, "last_success_ms": 1, "enabled": True},
    }
}


def test_histogram_rate_outbox_and_component_values() -> None:
    outbox = {"unpublished": 12, "oldest_unpublished_age_s": 3.5}
    text = generate_latest(make_registry(lambda: HEALTH, lambda: outbox)).decode()
    labels = 'line="l1",model="m1",tier="1"'
    assert f'appliance_inference_latency_ms_bucket{{le="1.0",{labels}}} 4.0' in text
    assert f'appliance_inference_latency_ms_bucket{{le="5.0",{labels}}} 9.0' in text
    assert f'appliance_inference_latency_ms_bucket{{le="+Inf",{labels}}} 10.0' in text
    assert f"appliance_inference_latency_ms_sum{{{labels}}} 30.0" in text
    assert f"appliance_tier_escalation_rate{{{labels}}} 0.3" in text
    assert "appliance_outbox_depth 12.0" in text
    assert "appliance_outbox_oldest_age_seconds 3.5" in text
    assert 'appliance_component_value{component="sync",key="backlog"} 7.0' in text
    assert 'key="enabled"' not in text  # booleans are not numbers
    assert "appliance_sync_lag_seconds" in text
