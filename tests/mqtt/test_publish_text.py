"""The outbox's splice of ts_publish_ms and replayed into the stored text equals parse+serialise."""

from __future__ import annotations

import json

import pytest

from appliance.inference.runtime import Defect
from appliance.mqtt.publisher import publish_text, reserialise
from appliance.results import ModelRef, Verdict


def stored(**overrides: object) -> str:
    """A payload as the store writer writes it."""
    fields: dict[str, object] = {
        "part_id": "cam1-1-7",
        "revision": 0,
        "line": "line1",
        "camera": "cam1",
        "ts_capture_ms": 1_700_000_000_123,
        "verdict": "fail",
        "defect_class": "crack",
        "confidence": 0.91234,
        "score": 0.91234,
        "tier": 1,
        "provisional": False,
        "defects": (Defect("crack", 0.9, (10, 20, 60, 90)), Defect("blowhole", 0.55, (1, 2, 3, 4))),
        "inference_ms": 3.25,
        "total_ms": 5.5,
        "model": ModelRef("mt-tier1", "1.0.0", "a" * 64),
    }
    fields.update(overrides)
    return json.dumps(Verdict(**fields).to_payload("press-3", 42), separators=(",", ":"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        stored(),
        stored(defects=(), defect_class=None, verdict="pass", model=None),
        stored(revision=1, refinement="changed", provisional=True),
        # a string value that carries the markers: escaped there, so it never matches
        stored(verdict="error", error='tier 2 failed: "ts_publish_ms":null, "replayed":false \u00e9\u2603'),
        stored(confidence=float("nan")),
    ],
)
@pytest.mark.parametrize("replayed", [False, True])
def test_splice_equals_reserialising(text: str, replayed: bool) -> None:
    spliced = publish_text(text, 1_700_000_000_999, replayed)
    assert spliced == reserialise(text, 1_700_000_000_999, replayed)
    payload = json.loads(spliced)
    assert payload["ts_publish_ms"] == 1_700_000_000_999 and payload["replayed"] is replayed


def test_payloads_without_the_markers_take_the_exact_path() -> None:
    pretty = json.dumps(json.loads(stored()), indent=1)  # "ts_publish_ms": null, with a space
    again = json.loads(publish_text(pretty, 5, True))
    assert again["ts_publish_ms"] == 5 and again["replayed"] is True
    doubled = stored()[:-1] + ',"extra":{"ts_publish_ms":null,"replayed":false}}'
    again = json.loads(publish_text(doubled, 6, True))
    assert (again["ts_publish_ms"], again["replayed"]) == (6, True)
    assert again["extra"] == {"ts_publish_ms": None, "replayed": False}  # untouched
