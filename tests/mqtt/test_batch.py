"""How the outbox groups results into messages when batching (`mqtt.results_per_message`)."""

from __future__ import annotations

import json
from collections import deque

from appliance.mqtt.publisher import _BATCH_MAX_BYTES, _Batch, _Gather, batch_text, publish_text


def row(seq: int, line: str = "line1", size: int = 400) -> dict:
    return {"seq": seq, "line": line, "payload": "x" * size}


def stored(seq: int, line: str = "line1", pad: int = 0) -> dict:
    payload = {"seq": seq, "line": line, "ts_publish_ms": None, "replayed": False, "pad": "y" * pad}
    return {"seq": seq, "line": line, "payload": json.dumps(payload, separators=(",", ":"))}


def test_a_batch_holds_one_line_up_to_its_count():
    batch = _Batch(3)
    for seq in range(1, 4):
        assert batch.takes(row(seq))
        batch.add(row(seq), False)
    assert not batch.takes(row(4)), "full at results_per_message"
    assert not _fresh_with(row(1)).takes(row(2, line="line2")), "another line starts a new message"


def test_a_batch_stays_under_the_byte_limit_but_always_takes_one_result():
    big = row(1, size=_BATCH_MAX_BYTES + 10)
    assert _Batch(50).takes(big), "a result larger than the limit still goes, alone"
    batch = _fresh_with(row(1, size=_BATCH_MAX_BYTES - 1000))
    assert batch.takes(row(2, size=800))
    assert not batch.takes(row(2, size=1000))


def test_the_published_message_of_a_full_batch_is_within_the_limit():
    batch = _Batch(1000)
    seq = 0
    while batch.takes(candidate := stored(seq + 1, pad=900)):
        seq += 1
        batch.add(candidate, True)
    text = batch_text([publish_text(s, 1_718_000_000_123, r) for _, s, r in batch.items])
    assert len(batch.items) > 10 and len(text.encode()) <= _BATCH_MAX_BYTES


def test_interleaved_lines_each_get_their_own_batches_within_the_window():
    """Lines a (odd seqs) and b (even) alternate; 3 messages of up to 4 results each."""
    gather = _Gather(room=3, per_message=4)
    taken = []
    for seq in range(1, 20):
        if not gather.take(stored(seq, "a" if seq % 2 else "b"), False):
            break  # as the outbox does: the rest waits for room in the window
        taken.append(seq)
    assert taken == list(range(1, 10)), "line b's next batch would be a fourth message"
    assert [[item[0] for item in b.items] for b in gather.batches()] == [[1, 3, 5, 7], [2, 4, 6, 8], [9]]


def test_batch_text_is_the_single_messages_in_an_envelope():
    text = json.dumps({"seq": 7, "ts_publish_ms": None, "replayed": False}, separators=(",", ":"))
    one = publish_text(text, 123, True)
    message = json.loads(batch_text([one, one]))
    assert message == {"schema": "vision.results/1", "results": [json.loads(one)] * 2}
    assert message["results"][0] == {"seq": 7, "ts_publish_ms": 123, "replayed": True}


def _fresh_with(first: dict) -> _Batch:
    batch = _Batch(50)
    batch.add(first, False)
    return batch


def test_a_republish_cut_by_a_lost_connection_resumes_on_the_next():
    """The part of a republish request not yet sent when the link drops is sent after it."""
    from appliance.mqtt.publisher import OutboxPublisher

    outbox = OutboxPublisher.__new__(OutboxPublisher)
    outbox._events, outbox._republish = deque(), deque([(50, 60)])
    outbox._generation, outbox._replay = 3, (17, 40)
    outbox._inflight, outbox._inflight_seqs, outbox._drain = {}, set(), None
    outbox._events.append(("down", 3))
    outbox._handle_events()
    assert outbox._replay is None and list(outbox._republish) == [(17, 40), (50, 60)]
