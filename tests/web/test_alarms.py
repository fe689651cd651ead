"""The alarm banner derives disk, outbox and component conditions from health, without repeats."""

from __future__ import annotations

from appliance.web.alarms import banner


def test_banner() -> None:
    health = {
        "alarms": [{"kind": "camera_lost", "message": "camera c1 lost", "camera": "c1", "ts_ms": 5}],
        "components": {
            "cameras": {
                "c1": {"state": "degraded", "status": "reconnecting"},
                "c2": {"state": "degraded", "status": "reconnecting"},
            },
            "store": {
                "state": "degraded",
                "disk_free_mb": 50.0,
                "dropped_unpublished": 3,
                "last_error": None,
            },
            "mqtt": {"state": "error", "last_error": "connection refused"},
            "sync": {"state": "ok"},
            "ladders": {},
        },
    }
    out = banner(health, min_free_mb=200)
    kinds = [a["kind"] for a in out]
    assert kinds[:4] == ["camera_lost", "disk_low", "outbox_dropping", "mqtt"]
    assert [a["severity"] for a in out] == ["alarm"] * 4 + ["warning"]
    assert out[-1]["message"] == "Camera c2: reconnecting"  # c1 is already covered by its alarm
    assert "50 MB free" in out[1]["message"]
    assert banner({"alarms": [], "components": {}}, 200) == []
