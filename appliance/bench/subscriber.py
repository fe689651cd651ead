"""The OT side for the bench, in a process of its own: receives results, logs arrival times.

    python -m appliance.bench.subscriber HOST PORT TOPIC OUTFILE

TOPIC is the `result` filter; its batched twin (`results`) is subscribed as well.

Writes one line per result: `received_ms ts_capture_ms revision msg_id part_id` (received_ms
with microseconds), and creates
OUTFILE.ready once the subscription is acknowledged. Stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    """Subscribe and log until terminated."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port, topic, outfile = argv[0], int(argv[1]), argv[2], Path(argv[3])
    out = outfile.open("w", buffering=1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}", protocol=mqtt.MQTTv5
    )

    def on_connect(c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        c.subscribe([(topic, 1), (topic + "s", 1)])  # .../result and, batched, .../results

    def on_subscribe(*_: Any) -> None:
        outfile.with_suffix(".ready").touch()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        received = f"{time.time_ns() / 1e6:.3f}"
        try:
            payload = json.loads(message.payload)
            results = payload.get("results", [payload])  # batched or not
            out.write(
                "".join(
                    f"{received} {r['ts_capture_ms']} {r['revision']} {r['msg_id']} {r['part_id']}\n"
                    for r in results
                )
            )
        except (ValueError, KeyError, TypeError):
            return

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
