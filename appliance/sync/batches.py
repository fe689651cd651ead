"""Result batches: gzip JSON Lines objects whose boundaries and bytes are deterministic.

A batch is "every result from the sync cursor + 1, up to `batch_max_rows` rows or the last
committed row", cut by the sync worker and **recorded in `sync_batches` before the upload**.
Its key follows from the boundary alone::

    {site}/{node}/results/{yyyy}/{mm}/{dd}/{first_seq:012d}-{last_seq:012d}.jsonl.gz

(the date from the first row's capture time, UTC; seqs zero-padded so that keys sort in seq
order). The body is each row's stored `vision.result/1` payload, one per line in seq order,
gzip-compressed with a zero timestamp: rebuilding a recorded batch yields the same bytes, so a
retry after a crash between the store's 2xx and our commit writes the same object to the same
key, and the target's idempotent put (conditional put or HEAD with sha256) skips it. A batch is
marked synced (the cursor moves) only after both the data object and its manifest got a 2xx.
Every `seq` is therefore in exactly one results object, and the objects cover seqs in order.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from appliance.results import now_ms
from appliance.sync.images import day_path
from appliance.sync.targets import sha256_hex

BATCH_SCHEMA = "vision.sync.batch/1"
DATA_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True, slots=True)
class Batch:
    """A recorded batch boundary."""

    id: int
    first_seq: int
    last_seq: int
    rows: int
    key: str
    created_ms: int
    attempts: int

    @property
    def manifest_key(self) -> str:
        """The manifest object's key, beside the data."""
        return self.key[: -len(DATA_SUFFIX)] + MANIFEST_SUFFIX

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Batch:
        """From a `sync_batches` row."""
        return cls(
            row["id"],
            row["first_seq"],
            row["last_seq"],
            row["rows"],
            row["key"],
            row["created_ms"],
            row["attempts"],
        )


@dataclass(frozen=True, slots=True)
class Built:
    """A batch's object bytes, rebuilt from the database."""

    data: bytes
    sha256: str
    rows: int
    raw_bytes: int
    counts: dict[str, int]


def results_key(site: str, node: str, first_seq: int, last_seq: int, first_ts_ms: int) -> str:
    """The deterministic object key of a batch."""
    return f"{site}/{node}/results/{day_path(first_ts_ms)}/{first_seq:012d}-{last_seq:012d}{DATA_SUFFIX}"


def synced_cursor(conn: sqlite3.Connection) -> int:
    """The highest seq in a synced batch (0 before the first)."""
    row = conn.execute("SELECT MAX(last_seq) FROM sync_batches WHERE synced_ms IS NOT NULL").fetchone()
    return int(row[0] or 0)


def pending_batch(conn: sqlite3.Connection) -> Batch | None:
    """The recorded batch not yet synced (at most one exists), if any."""
    row = conn.execute(
        "SELECT * FROM sync_batches WHERE synced_ms IS NULL ORDER BY first_seq LIMIT 1"
    ).fetchone()
    return Batch.from_row(row) if row else None


@dataclass(frozen=True, slots=True)
class Boundary:
    """Where the next batch starts and ends, read from the results table."""

    after: int  # the cursor it continues from
    first_seq: int
    last_seq: int
    rows: int
    first_ts_ms: int


def next_boundary(conn: sqlite3.Connection, max_rows: int) -> Boundary | None:
    """The next batch after every recorded one: up to `max_rows` committed rows."""
    after = int(conn.execute("SELECT COALESCE(MAX(last_seq), 0) FROM sync_batches").fetchone()[0])
    first = conn.execute(
        "SELECT seq, ts_capture_ms FROM results WHERE seq > ? ORDER BY seq LIMIT 1", (after,)
    ).fetchone()
    if first is None:
        return None
    last, rows = conn.execute(
        "SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM results WHERE seq > ? ORDER BY seq LIMIT ?)",
        (after, max_rows),
    ).fetchone()
    return Boundary(after, int(first["seq"]), int(last), int(rows), int(first["ts_capture_ms"]))


def record_op(boundary: Boundary, site: str, node: str) -> Callable[[sqlite3.Connection], Batch]:
    """The writer op that records a boundary before anything is uploaded."""
    key = results_key(site, node, boundary.first_seq, boundary.last_seq, boundary.first_ts_ms)

    def op(conn: sqlite3.Connection) -> Batch:
        after = int(conn.execute("SELECT COALESCE(MAX(last_seq), 0) FROM sync_batches").fetchone()[0])
        if after != boundary.after:  # only the sync worker cuts batches; never expected
            raise RuntimeError(f"sync cursor moved from {boundary.after} to {after} while cutting a batch")
        created = now_ms()
        cursor = conn.execute(
            "INSERT INTO sync_batches (first_seq, last_seq, rows, key, created_ms) VALUES (?, ?, ?, ?, ?)",
            (boundary.first_seq, boundary.last_seq, boundary.rows, key, created),
        )
        return Batch(
            int(cursor.lastrowid or 0), boundary.first_seq, boundary.last_seq, boundary.rows, key, created, 0
        )

    return op


def build(conn: sqlite3.Connection, batch: Batch) -> Built:
    """The batch's gzip JSON Lines bytes: stored payloads in seq order, zero gzip mtime."""
    rows = conn.execute(
        "SELECT verdict, payload FROM results WHERE seq BETWEEN ? AND ? ORDER BY seq",
        (batch.first_seq, batch.last_seq),
    ).fetchall()
    text = "".join(row["payload"] + "\n" for row in rows).encode("utf-8")
    data = gzip.compress(text, compresslevel=6, mtime=0)
    counts = Counter(row["verdict"] for row in rows)
    return Built(data, sha256_hex(data), len(rows), len(text), dict(sorted(counts.items())))


def manifest(batch: Batch, built: Built, site: str, node: str, store_id: str) -> bytes:
    """The small manifest beside each batch (deterministic for the same batch)."""
    doc = {
        "schema": BATCH_SCHEMA,
        "site": site,
        "node": node,
        "store_id": store_id,
        "key": batch.key,
        "first_seq": batch.first_seq,
        "last_seq": batch.last_seq,
        "rows": built.rows,
        "missing_rows": batch.last_seq - batch.first_seq + 1 - built.rows,
        "counts": built.counts,
        "bytes": len(built.data),
        "uncompressed_bytes": built.raw_bytes,
        "sha256": built.sha256,
        "created_ms": batch.created_ms,
        "format": "gzip JSON Lines of vision.result/1, one result per line, ascending seq",
    }
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")


def commit_op(batch: Batch, built: Built) -> Callable[[sqlite3.Connection], None]:
    """The writer op that marks a batch synced (after the store's 2xx for data and manifest)."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE sync_batches SET synced_ms = ?, bytes = ?, sha256 = ? WHERE id = ?",
            (now_ms(), len(built.data), built.sha256, batch.id),
        )

    return op


def failed_op(batch: Batch) -> Callable[[sqlite3.Connection], None]:
    """The writer op that counts a failed attempt."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE sync_batches SET attempts = attempts + 1 WHERE id = ?", (batch.id,))

    return op
