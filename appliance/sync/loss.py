"""Results that local retention deleted before they reached the cloud: counted once, alarmed.

The store writer's retention deletes results from the head (lowest `seq`) by age and row
budget, without regard to sync. Seqs are contiguous and deletions only come from the head,
so every seq above the synced cursor and below the lowest row still present was lost before
it could be uploaded. `LossWatch.seen_gone_through(seq)` takes such a bound from wherever the
worker learns it:

- each pass of the worker's loop probes `MIN(seq)` (one index lookup), so a loss shows while
  the uplink is still down, not only once it returns;
- a new batch starts after rows already gone (the cursor behind the oldest row), the
  first sync of an old store included;
- a recorded batch is rebuilt with fewer rows than it was cut with (retention reached it while
  its upload was failing): the missing rows are the head of its range.

Each lost seq is counted once (`rows_lost`) and reported by an event `sync_rows_lost`
(severity alarm, `first_seq`, `last_seq`, `rows`, `total`); the alarm `sync:rows_lost` stays
active (console banner) until sync has caught up with everything still stored.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.events import EventBus
from appliance.results import now_ms

LOST_ALARM = "sync:rows_lost"


class LossWatch:
    """Counts and reports results lost to retention before upload; see the module docstring."""

    def __init__(self, events: EventBus, synced_cursor: int) -> None:
        self.events = events
        self.lost_through = synced_cursor  # every seq up to here is synced or already counted
        self.rows_lost = 0
        self.last_loss: dict[str, Any] | None = None

    def probe(self, conn: sqlite3.Connection, last_seq: int, synced_cursor: int) -> None:
        """Compare the lowest stored seq with the synced cursor (`last_seq` read before)."""
        low = conn.execute("SELECT MIN(seq) FROM results").fetchone()[0]
        gone_through = last_seq if low is None else int(low) - 1
        self.seen_gone_through(gone_through, synced_cursor)

    def seen_gone_through(self, seq: int, synced_cursor: int) -> None:
        """Every result up to `seq` is gone from the store; count those never synced."""
        floor = max(synced_cursor, self.lost_through)
        if seq <= floor:
            return
        first, rows = floor + 1, seq - floor
        self.lost_through = seq
        self.rows_lost += rows
        self.last_loss = {"first_seq": first, "last_seq": seq, "rows": rows, "ms": now_ms()}
        message = (
            f"{rows} result(s) (seq {first}..{seq}) were deleted by local retention before they "
            f"reached the cloud ({self.rows_lost} since start)"
        )
        total = self.rows_lost
        if any(a.details.get("alarm") == LOST_ALARM for a in self.events.alarms()):
            self.events.emit(
                "sync_rows_lost", message, "alarm", first_seq=first, last_seq=seq, rows=rows, total=total
            )
        else:
            self.events.raise_alarm(
                LOST_ALARM, "sync_rows_lost", message, first_seq=first, last_seq=seq, rows=rows, total=total
            )

    def caught_up(self) -> None:
        """Nothing stored waits for the cloud any more: the alarm clears (the count stays)."""
        self.events.clear_alarm(
            LOST_ALARM, "sync_rows_lost_cleared", "cloud sync caught up after losing rows"
        )

    def health(self) -> dict[str, Any]:
        """Figures for the worker's health."""
        return {"rows_lost_to_retention": self.rows_lost, "last_rows_lost": self.last_loss}
