"""Store-and-forward to the cloud: result batches, hard cases, privacy, verdict pull-back.

`attach(service)` adds two components:

- ``images`` (`keeper.Keeper`): keeps frames at capture time within a disk budget, selects hard
  cases (and turns disputing labels into hard cases); it works without any sync target, for
  the console's review queue and result detail;
- ``sync`` (`worker.SyncWorker`), when ``sync.target`` is set: uploads what the policy allows
  and pulls the cloud's verdicts back as refinements.

See docs/sync.md (layout, idempotency, operations) and docs/privacy.md (what leaves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.service import Service


def attach(service: Service) -> None:
    """Register the image keeper (unless retain = none) and, with a target, the sync worker."""
    from appliance.sync.keeper import Keeper
    from appliance.sync.worker import SyncWorker

    settings = service.settings
    if settings.sync.images.retain != "none" or settings.sync.target:
        keeper = Keeper(settings, service.writer, service.events, service.ladders)
        service.add_observer(keeper.selector.observe)
        service.add_component("images", keeper)
    if settings.sync.target:
        service.add_component("sync", SyncWorker(settings, service.writer, service.events))
