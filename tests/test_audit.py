"""The audit log on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from appliance import audit
from appliance.auth import in_transaction
from appliance.store.db import open_store


def test_record_filter_page_and_prune(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "a.db")
    admin = audit.Actor("ann", "user", "10.0.0.5")
    with in_transaction(conn):
        audit.record(conn, admin, "login", "ok", target="ann")
        audit.record(conn, admin, "config.update", "invalid", target="/etc/a.toml", details={"errors": ["x"]})
        audit.record(
            conn, audit.Actor("mes", "token"), "label", "ok", target="p-1", details={"big": "y" * 30_000}
        )
        audit.record(conn, audit.Actor("\ud800bad", "anonymous"), "login", "failed")
    entries = audit.entries(conn)
    assert [e["action"] for e in entries] == ["login", "label", "config.update", "login"]
    assert entries[0]["actor"] == "?bad" and entries[0]["result"] == "failed"
    assert "truncated" in entries[1]["details"]
    assert entries[2]["details"] == {"errors": ["x"]} and entries[2]["address"] == "10.0.0.5"
    assert [e["result"] for e in audit.entries(conn, action="login")] == ["failed", "ok"]
    assert len(audit.entries(conn, before_id=entries[1]["id"])) == 2
    assert audit.entries(conn, actor="mes")[0]["target"] == "p-1"
    conn.execute("UPDATE audit SET ts_ms = 0 WHERE action = 'login'")
    with in_transaction(conn):
        assert audit.prune(conn) == 2
    assert len(audit.entries(conn)) == 2
    conn.close()
