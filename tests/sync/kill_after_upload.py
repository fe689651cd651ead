"""Harness for the crash test: runs a sync worker whose target SIGKILLs the process right after
the first batch's objects got the store's 2xx, before the batch is committed as synced.

The kill is injected through the worker's public `target_factory` seam by this harness; the
production code has no hook for it. Usage: python kill_after_upload.py SETTINGS_JSON
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.config import Settings  # noqa: E402
from appliance.events import EventBus  # noqa: E402
from appliance.store.writer import StoreWriter  # noqa: E402
from appliance.sync.targets import make_target  # noqa: E402
from appliance.sync.throttle import TokenBucket  # noqa: E402
from appliance.sync.worker import SyncWorker  # noqa: E402


class KillAfterManifest:
    """Wraps the real target; dies by SIGKILL once a manifest upload returned."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def put(self, key: str, data: bytes, **kwargs: Any) -> bool:
        written = self.inner.put(key, data, **kwargs)
        if key.endswith(".manifest.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return bool(written)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    settings = Settings(**json.loads(sys.argv[1]))
    writer = StoreWriter(settings.db_path, settings.node_id, settings.store)
    writer.start()

    def factory(store_id: str, limiter: TokenBucket) -> Any:
        return KillAfterManifest(make_target(settings.sync, store_id, limiter))

    worker = SyncWorker(settings, writer, EventBus(), target_factory=factory)
    worker.start()
    time.sleep(30)  # the kill comes long before
    sys.exit(3)


if __name__ == "__main__":
    main()
