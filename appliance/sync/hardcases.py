"""Hard-case selection: which parts the cloud should look at again or learn from.

Strategies, each with its own quota per UTC hour and per UTC day (so one bad hour cannot use
up the day, and no strategy starves another):

- ``uncertain``: the final verdict is still in the uncertain band of the last local tier. On a
  line whose ladder ends in ``cloud`` the ladder offers these itself (`HardCaseSink.offer`);
  on other lines the selector checks the band of the deciding tier.
- ``disputed``: an operator's label disagrees with the latest verdict (scanned from `labels`).
- ``sample``: a random fraction of final passes, so that drift stays visible.
- ``class``: every fail of the chosen defect classes.

Only final verdicts are considered (a provisional verdict's part will be seen again when it
is refined). Selection runs on the inference thread and only counts and enqueues; images are
encoded and rows written by the keeper's own thread.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.config import HardCasesConfig, QuotaConfig
from appliance.inference.ladder import Ladder
from appliance.results import Frame, Verdict, now_ms
from appliance.sync.meta import set_meta_op

logger = logging.getLogger(__name__)

REASONS = ("uncertain", "disputed", "sample", "class")
LABELS_CURSOR = "sync.labels_cursor"


class Quota:
    """At most `per_hour` takes per UTC hour and `per_day` per UTC day; thread-safe."""

    def __init__(self, config: QuotaConfig) -> None:
        self.per_hour = config.per_hour
        self.per_day = config.per_day
        self._lock = threading.Lock()
        self._hour = -1
        self._day = -1
        self.hour_count = 0
        self.day_count = 0
        self.taken = 0
        self.refused = 0

    def _roll(self, now_s: float) -> None:
        hour, day = int(now_s // 3600), int(now_s // 86400)
        if hour != self._hour:
            self._hour, self.hour_count = hour, 0
        if day != self._day:
            self._day, self.day_count = day, 0

    def restore(self, hour_count: int, day_count: int, now_s: float | None = None) -> None:
        """Start from the counts already used this hour and day (read from the database)."""
        with self._lock:
            self._roll(time.time() if now_s is None else now_s)
            self.hour_count, self.day_count = hour_count, day_count

    def try_take(self, now_s: float | None = None) -> bool:
        """Use one unit if both quotas allow it."""
        with self._lock:
            self._roll(time.time() if now_s is None else now_s)
            if self.hour_count >= self.per_hour or self.day_count >= self.per_day:
                self.refused += 1
                return False
            self.hour_count += 1
            self.day_count += 1
            self.taken += 1
            return True

    def note(self, now_s: float | None = None) -> None:
        """Count one unit used by a selection that cannot be refused (it already happened)."""
        with self._lock:
            self._roll(time.time() if now_s is None else now_s)
            self.hour_count += 1
            self.day_count += 1
            self.taken += 1


@dataclass(frozen=True, slots=True)
class Job:
    """A verdict whose frame should be kept and/or which became a hard case."""

    frame: Frame
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    keep_image: bool = False


class HardCaseSelector:
    """Observer of every verdict and the ladders' hard-case sink."""

    def __init__(
        self,
        config: HardCasesConfig,
        retain: str,
        submit: Callable[[Job], bool],
        ladders: Mapping[str, Ladder],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.retain = retain
        self.submit = submit
        self.ladders = ladders
        self.rng = rng or random.Random()
        self.quotas = {
            "uncertain": Quota(config.uncertain),
            "disputed": Quota(config.disputed),
            "sample": Quota(config.sample),
            "class": Quota(config.classes),
        }
        self._classes = set(config.classes.classes)
        self._lock = threading.Lock()
        self.selected = dict.fromkeys(REASONS, 0)
        self._restored_ms = 0  # hard cases created before this were counted by `restore`

    def restore(self, conn: sqlite3.Connection) -> None:
        """Re-read how much of this hour's and day's quotas is used (survives restarts)."""
        self._restored_ms = now_ms()
        now_s = time.time()
        hour_start = int(now_s // 3600) * 3600 * 1000
        day_start = int(now_s // 86400) * 86400 * 1000
        rows = conn.execute(
            "SELECT reason, SUM(created_ms >= ?), COUNT(*) FROM hard_cases "
            "WHERE created_ms >= ? GROUP BY reason",
            (hour_start, day_start),
        ).fetchall()
        for reason, hour, day in rows:
            if reason in self.quotas:
                self.quotas[reason].restore(int(hour or 0), int(day), now_s)

    # --- the per-verdict path (inference thread: count and enqueue only) ---------------------

    def observe(self, frame: Frame, verdict: Verdict) -> None:
        """Decide whether to keep the frame and which strategies select the part."""
        if verdict.provisional:
            return
        reasons: list[str] = []
        ladder = self.ladders.get(verdict.line)
        if (
            self.config.uncertain.enabled
            and ladder is not None
            and not ladder.cloud  # lines with a cloud tier: the ladder offers these itself
            and verdict.verdict != "error"
            and _in_last_band(ladder, verdict)
            and self.quotas["uncertain"].try_take()
        ):
            reasons.append("uncertain")
        if (
            verdict.verdict == "pass"
            and self.config.sample.enabled
            and self.config.sample.rate > 0
            and self.rng.random() < self.config.sample.rate
            and self.quotas["sample"].try_take()
        ):
            reasons.append("sample")
        if (
            verdict.verdict == "fail"
            and self.config.classes.enabled
            and verdict.defect_class in self._classes
            and self.quotas["class"].try_take()
        ):
            reasons.append("class")
        keep = self.retain == "all" or (self.retain == "fails" and verdict.verdict in ("fail", "error"))
        keep = keep or (bool(reasons) and self.retain != "none")
        if reasons or keep:
            self._submit(Job(frame, verdict, tuple(reasons), keep), reasons)

    def offer(self, frame: Frame, verdict: Verdict, reason: str) -> None:
        """The ladder's HardCaseSink: still uncertain after the last local tier."""
        if reason != "uncertain" or not self.config.uncertain.enabled or verdict.provisional:
            return
        if self.quotas["uncertain"].try_take():
            self._submit(Job(frame, verdict, ("uncertain",), self.retain != "none"), ["uncertain"])

    def _submit(self, job: Job, reasons: list[str]) -> None:
        for reason in reasons:
            self._count(reason)
        self.submit(job)

    def _count(self, reason: str) -> None:
        with self._lock:
            self.selected[reason] += 1

    # --- disputes (keeper thread) -----------------------------------------------------------

    def disputes_op(self, labels: list[sqlite3.Row], cursor: int) -> Callable[[sqlite3.Connection], int]:
        """The op that records disputed labels as hard cases and moves the labels cursor.

        Runs on the writer thread so the comparison with the latest verdict and the insert are
        one transaction; returns how many new disputed cases it recorded. Each disputed case
        uses the quota once: a part already recorded as disputed takes nothing. The console
        records an operator's dispute itself, at once and without a quota (`label_op`, same
        `created_ms` as its label); such a case is counted against the quota here, when its
        label is scanned (unless `restore` counted it already), but never refused.
        """

        def op(conn: sqlite3.Connection) -> int:
            recorded = 0
            quota = self.quotas["disputed"]
            for label in labels:
                latest = conn.execute(
                    "SELECT line, verdict, defect_class FROM results WHERE part_id = ? "
                    "ORDER BY revision DESC LIMIT 1",
                    (label["part_id"],),
                ).fetchone()
                if latest is None or not disagrees(label, latest):
                    continue
                existing = conn.execute(
                    "SELECT created_ms FROM hard_cases WHERE part_id = ? AND reason = 'disputed'",
                    (label["part_id"],),
                ).fetchone()
                if existing is not None:
                    created = existing["created_ms"]
                    if created == label["created_ms"]:  # the console's, for this very label
                        self._count("disputed")
                        if created >= self._restored_ms:
                            quota.note()
                    continue
                if not quota.try_take():
                    continue
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO hard_cases (part_id, line, reason, created_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (label["part_id"], latest["line"], "disputed", now_ms()),
                ).rowcount
                if inserted:
                    recorded += 1
                    self._count("disputed")
            set_meta_op(LABELS_CURSOR, str(cursor))(conn)
            return recorded

        return op

    def health(self) -> dict[str, Any]:
        """Selections and quota refusals per strategy."""
        return {
            reason: {
                "selected": self.selected[reason],
                "over_quota": quota.refused,
                "this_hour": quota.hour_count,
                "today": quota.day_count,
            }
            for reason, quota in self.quotas.items()
        }


def disagrees(label: sqlite3.Row | dict[str, Any], latest: sqlite3.Row | dict[str, Any]) -> bool:
    """Does the operator's label contradict the verdict (pass/fail, or the class of a fail)?"""
    if label["verdict"] != latest["verdict"]:
        return True
    return bool(
        label["verdict"] == "fail"
        and label["defect_class"]
        and latest["defect_class"]
        and label["defect_class"] != latest["defect_class"]
    )


def _in_last_band(ladder: Ladder, verdict: Verdict) -> bool:
    last = ladder.tiers[-1]
    return verdict.tier == last.index and last.in_band(verdict.score)
