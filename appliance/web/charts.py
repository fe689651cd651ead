"""Charts drawn on the server as small SVG documents (no JavaScript, no CDN, fine under CSP).

Colours are presentation attributes, not CSS, so that a chart looks the same inline and as an
`<img>`; every bar also carries a `<title>` with its numbers for people who hover or use a
screen reader, and the legend says in words what each colour means.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

PASS, FAIL, ERROR = "#2fa84f", "#e5483b", "#f2a900"
INK, GRID, MUTED = "#e8eaed", "#3c4148", "#9aa0a6"
TIER_COLOURS = ("#5aa9e6", "#c58af9", "#f6ae2d", "#7fd1ae")
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {FONT}>'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, size: int = 12, fill: str = MUTED, anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
        f'text-anchor="{anchor}">{escape(text)}</text>'
    )


def _legend(x: float, y: float, items: list[tuple[str, str]]) -> list[str]:
    out = []
    for colour, name in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        out.append(_text(x + 16, y, name, fill=INK))
        x += 24 + 7.5 * len(name)
    return out


def yield_chart(
    figures: dict[str, Any], bucket_ms: int, *, title: str, width: int = 720, height: int = 240
) -> str:
    """Parts per time bucket (stacked pass/fail/error bars) and the yield in % as a line."""
    left, right, top, bottom = 44, 48, 48, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    buckets = figures.get("buckets", [])
    n = max(1, len(buckets))
    peak = max([b["pass"] + b["fail"] + b["error"] for b in buckets] + [1])
    step = plot_w / n
    body = [_text(left, 18, title, size=14, fill=INK)]
    body += _legend(
        left, 38, [(PASS, "pass"), (FAIL, "fail"), (ERROR, "error"), (INK, "yield % (right axis)")]
    )
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, f"{round(peak * frac)}", anchor="end"))
        body.append(_text(left + plot_w + 6, y + 4, f"{round(100 * frac)}%"))
    points = []
    for i, b in enumerate(buckets):
        x = left + i * step + step * 0.12
        bar_w = step * 0.76
        y = top + plot_h
        total = b["pass"] + b["fail"] + b["error"]
        when = datetime.fromtimestamp(b["start_ms"] / 1000).astimezone()
        tip = f"{when:%H:%M}: {b['pass']} pass, {b['fail']} fail, {b['error']} error"
        for key, colour in (("pass", PASS), ("fail", FAIL), ("error", ERROR)):
            if b[key] <= 0:
                continue
            h = plot_h * b[key] / peak
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if total:
            points.append((left + (i + 0.5) * step, top + plot_h * (1 - b["pass"] / total)))
        if i % max(1, n // 8) == 0:
            body.append(_text(left + i * step, height - 8, f"{when:%H:%M}", size=11))
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{INK}" stroke-width="2"/>')
    for x, y in points:
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{INK}"/>')
    if not points:
        body.append(_text(left + plot_w / 2, top + plot_h / 2, "no parts yet this shift", anchor="middle"))
    return _svg(width, height, body, title)


def latency_chart(tiers: list[dict[str, Any]], *, title: str, width: int = 720, height: int = 240) -> str:
    """Share of verdicts per inference-latency bucket, one bar colour per tier."""
    left, right, top, bottom = 44, 16, 48, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    shown = [t for t in tiers if t.get("latency_hist")]
    hists: list[dict[str, Any]] = [t["latency_hist"] for t in shown]
    body = [_text(left, 18, title, size=14, fill=INK)]
    if not hists or not any(sum(h["counts"]) for h in hists):
        body.append(_text(left + plot_w / 2, top + plot_h / 2, "no verdicts yet", anchor="middle"))
        return _svg(width, height, body, title)
    bounds = hists[0]["le_ms"]
    labels = [f"≤{_ms(b)}" for b in bounds] + [f">{_ms(bounds[-1])}"]
    groups = len(labels)
    step = plot_w / groups
    bar_w = step * 0.8 / max(1, len(hists))
    legend = []
    for k, (tier, hist) in enumerate(zip(shown, hists, strict=True)):
        colour = TIER_COLOURS[k % len(TIER_COLOURS)]
        legend.append((colour, f"tier {tier['tier']} {tier['model']}"))
        total = sum(hist["counts"]) or 1
        for i, count in enumerate(hist["counts"]):
            share = count / total
            h = plot_h * share
            x = left + i * step + step * 0.1 + k * bar_w
            tip = escape(f"tier {tier['tier']}, {labels[i]}: {count} ({share:.0%})")
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, f"{round(100 * frac)}%", anchor="end"))
    for i, label in enumerate(labels):
        body.append(_text(left + (i + 0.5) * step, height - 10, label, size=10, anchor="middle"))
    body += _legend(left, 38, legend)
    return _svg(width, height, body, title)


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"
