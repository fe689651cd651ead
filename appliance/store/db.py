"""Opening the database and migrating its schema, from the first version on."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger(__name__)

# Each entry upgrades the schema by one version (PRAGMA user_version). Never edit a shipped
# entry: append a new one, so that every box in the field can walk forward from where it is.
MIGRATIONS: list[str] = [
    # 1: the results outbox and a small key/value table
    """
    CREATE TABLE results (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        part_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        line TEXT NOT NULL,
        camera TEXT NOT NULL,
        ts_capture_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        verdict TEXT NOT NULL,
        defect_class TEXT,
        confidence REAL,
        tier INTEGER NOT NULL,
        provisional INTEGER NOT NULL,
        payload TEXT NOT NULL,
        published_ms INTEGER,
        UNIQUE (part_id, revision)
    );
    CREATE INDEX results_unpublished ON results (seq) WHERE published_ms IS NULL;
    CREATE INDEX results_line_time ON results (line, ts_capture_ms);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE pending_refinements (
        part_id TEXT PRIMARY KEY,
        line TEXT NOT NULL,
        camera TEXT NOT NULL,
        frame_index INTEGER NOT NULL,
        ts_capture_ms INTEGER NOT NULL,
        next_tier INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        verdict TEXT NOT NULL,
        score REAL NOT NULL,
        image_path TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    -- Frames kept on disk (hard cases, failures, samples), within a disk budget. Paths are
    -- relative to <state_dir>/images. A row whose synced_ms is NULL has not left the box yet
    -- (or may never, by policy) and is never evicted silently.
    CREATE TABLE images (
        part_id TEXT PRIMARY KEY,
        line TEXT NOT NULL,
        camera TEXT NOT NULL,
        ts_capture_ms INTEGER NOT NULL,
        path TEXT NOT NULL,
        map_path TEXT,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        synced_ms INTEGER
    );
    CREATE INDEX images_age ON images (created_ms);
    -- Parts selected for re-analysis in the cloud and for the operators' review queue.
    -- reason: uncertain | disputed | sample | class
    CREATE TABLE hard_cases (
        id INTEGER PRIMARY KEY,
        part_id TEXT NOT NULL,
        line TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        synced_ms INTEGER,
        UNIQUE (part_id, reason)
    );
    -- Operators' labels (ground truth from the console); each counts as a dispute when it
    -- disagrees with the latest verdict, and is synced as training data.
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        part_id TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
        defect_class TEXT,
        user TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        synced_ms INTEGER
    );
    CREATE INDEX labels_part ON labels (part_id);
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    """,
    # 2: console accounts (argon2id hashes), sessions, login backoff/lockout, the audit log
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        disabled_ms INTEGER,
        last_login_ms INTEGER
    );
    -- The cookie holds a random token; only its sha256 is stored. csrf: the session's token
    -- for state-changing requests.
    CREATE TABLE sessions (
        token_sha256 TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        address TEXT
    );
    CREATE INDEX sessions_user ON sessions (user_id);
    -- Consecutive failed logins per user name (known or not, so lockout reveals nothing).
    CREATE TABLE login_failures (
        subject TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        locked_until_ms INTEGER
    );
    -- Who did what, when, from where, with what result: logins and every change.
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        result TEXT NOT NULL,
        address TEXT,
        details TEXT
    );
    CREATE INDEX audit_time ON audit (ts_ms);
    CREATE INDEX hard_cases_time ON hard_cases (created_ms);
    """,
    # 3: MQTT commands (dedupe by cmd_id, the last ack kept to be resent) and Sparkplug state
    """
    CREATE TABLE commands (
        cmd_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        ack TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX commands_age ON commands (received_ms);
    -- bd_seq: the bdSeq of the latest MQTT CONNECT (its Will is the NDEATH); forwarded_seq: the
    -- highest result seq handed to the Sparkplug session (store-and-forward resumes after it).
    CREATE TABLE sparkplug_state (
        edge_node TEXT PRIMARY KEY,
        bd_seq INTEGER NOT NULL,
        forwarded_seq INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL
    );
    """,
    # 4: cloud sync (appliance/sync): result batches, whose boundaries are recorded before the
    # upload so that a retry after a crash writes the same object; cloud verdicts already seen.
    """
    CREATE TABLE sync_batches (
        id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL UNIQUE,
        last_seq INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        key TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER,
        sha256 TEXT,
        synced_ms INTEGER
    );
    -- status: applied (published as a refinement) | rejected (malformed, unknown part...)
    CREATE TABLE cloud_verdicts (
        key TEXT PRIMARY KEY,
        etag TEXT NOT NULL,
        part_id TEXT,
        status TEXT NOT NULL,
        revision INTEGER,
        detail TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX sync_hard_cases_unsynced ON hard_cases (id) WHERE synced_ms IS NULL;
    CREATE INDEX sync_labels_unsynced ON labels (id) WHERE synced_ms IS NULL;
    """,
    # 5: a kept part's defect map (a PNG of a few hundred bytes, meaningless without its row)
    # in the row, committed with it: one file per kept part instead of two. Rows kept before
    # keep their map_path file.
    """
    ALTER TABLE images ADD COLUMN map_png BLOB;
    """,
]


# Migrations an older release cannot read past (a changed column or meaning). The others only
# add tables, columns or indexes, which older releases ignore.
BREAKING: frozenset[int] = frozenset()
_OLDEST_READER = "oldest_reader_schema"


class StoreError(Exception):
    """The database cannot be opened or migrated."""


def connect(path: Path, *, busy_timeout_ms: int = 5000, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout; transactions are explicit (autocommit off)."""
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed result survives power loss, not just a process crash.
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc
    return conn


def migrate(
    conn: sqlite3.Connection, migrations: list[str] | None = None, breaking: frozenset[int] | None = None
) -> int:
    """Apply pending migrations, each in its own transaction; return the schema version.

    A database migrated by a newer release still opens here when none of the migrations this
    release lacks is breaking (the newer release records the oldest schema that can read its
    database): a failed upgrade rolls back to the previous release without touching the data.
    """
    steps = MIGRATIONS if migrations is None else migrations
    breaking = BREAKING if breaking is None else breaking
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(steps):
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_OLDEST_READER,)).fetchone()
        oldest = int(row[0]) if row else 1
        if oldest > len(steps):
            raise StoreError(
                f"database schema version {version} is newer than this software ({len(steps)}) and "
                f"needs schema {oldest} or later to be read; refusing to run an older release against it"
            )
        logger.warning(
            "database schema %d is newer than this software (%d); its additions are ignored",
            version,
            len(steps),
        )
        return version
    for number in range(version, len(steps)):
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(steps[number]):
                conn.execute(statement)
            if number + 1 in breaking:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (_OLDEST_READER, str(number + 1)),
                )
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration {number + 1} failed: {exc}") from exc
    return len(steps)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit implicitly)."""
    parts, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                parts.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        parts.append(buffer.strip())
    return parts


def open_store(path: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Connect and migrate: the writer's connection."""
    conn = connect(path, busy_timeout_ms=busy_timeout_ms)
    migrate(conn)
    return conn
