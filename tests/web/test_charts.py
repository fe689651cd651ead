"""Server-side SVG charts are well-formed XML, say what they show, and escape text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from appliance.web.charts import latency_chart, yield_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_yield_chart() -> None:
    buckets = [
        {"start_ms": 1_700_000_000_000 + i * 1_800_000, "pass": 8, "fail": i, "error": 0} for i in range(16)
    ]
    svg = yield_chart({"buckets": buckets}, 1_800_000, title="Line <a> & b")
    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "Line <a> & b"
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 16 + 15  # pass bars everywhere, fail bars where fail > 0
    assert root.find(f"{SVG}polyline") is not None
    empty = ET.fromstring(yield_chart({"buckets": []}, 1, title="t"))
    assert any("no parts yet" in (t.text or "") for t in empty.iter(f"{SVG}text"))


def test_latency_chart() -> None:
    hist = {"le_ms": [1, 2, 5], "counts": [5, 3, 1, 1], "sum_ms": 20.0}
    tiers = [
        {"tier": 1, "model": "m<1>", "latency_hist": hist},
        {"tier": 2, "model": "m2", "latency_hist": hist},
    ]
    root = ET.fromstring(latency_chart(tiers, title="latency"))
    tips = [r.find(f"{SVG}title").text for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert "tier 1, ≤1 ms: 5 (50%)" in tips and "tier 2, >5 ms: 1 (10%)" in tips
    assert any(t.text == "tier 1 m<1>" for t in root.iter(f"{SVG}text"))
    assert "no verdicts yet" in latency_chart([], title="x")


def test_latency_chart_names_the_tier_each_histogram_belongs_to() -> None:
    hist = {"le_ms": [1, 2, 5], "counts": [5, 3, 1, 1], "sum_ms": 20.0}
    tiers = [{"tier": 1, "model": "m1"}, {"tier": 2, "model": "m2", "latency_hist": hist}]
    root = ET.fromstring(latency_chart(tiers, title="latency"))
    legend = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("tier ")]
    assert legend == ["tier 2 m2"]
