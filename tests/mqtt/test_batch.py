"""How the outbox groups results into one message when batching (`mqtt.results_per_message`)."""

from __future__ import annotations

import json

from appliance.mqtt.publisher import _BATCH_MAX_BYTES, _Batch, batch_text, publish_text


def row(seq: int, line: str = "line1", size: int = 400) -> dict:
    return {"seq": seq, "line": line, "payload": "x" * size}


def test_a_batch_holds_one_line_up_to_its_count():
    batch = _Batch()
    for seq in range(1, 4):
        assert batch.takes(row(seq), 3)
        batch.add(row(seq), False)
    assert not batch.takes(row(4), 3), "full at results_per_message"
    assert not _fresh_with(row(1)).takes(row(2, line="line2"), 50), "another line starts a new message"


def test_a_batch_stays_under_the_byte_limit_but_always_takes_one_result():
    big = row(1, size=_BATCH_MAX_BYTES + 10)
    assert _Batch().takes(big, 50), "a result larger than the limit still goes, alone"
    batch = _fresh_with(row(1, size=_BATCH_MAX_BYTES - 100))
    assert not batch.takes(row(2, size=200), 50)
    assert batch.takes(row(2, size=100), 50)


def test_batch_text_is_the_single_messages_in_an_envelope():
    stored = json.dumps({"seq": 7, "ts_publish_ms": None, "replayed": False}, separators=(",", ":"))
    one = publish_text(stored, 123, True)
    message = json.loads(batch_text([one, one]))
    assert message == {"schema": "vision.results/1", "results": [json.loads(one)] * 2}
    assert message["results"][0] == {"seq": 7, "ts_publish_ms": 123, "replayed": True}


def _fresh_with(first: dict) -> _Batch:
    batch = _Batch()
    batch.add(first, False)
    return batch
