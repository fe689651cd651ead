"""`appliance users add NAME --role ROLE --password-stdin`: the first admin, from the command line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance import audit
from appliance.auth import authenticate, verify_token
from appliance.cli import main
from appliance.store.db import open_store

CONFIG = """
state_dir = "{state}"
[[lines]]
id = "l1"
tiers = [{{ model = "mt-tier1" }}]
[[lines.cameras]]
id = "c1"
source = {{ kind = "simulator" }}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "a.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


def run(monkeypatch: pytest.MonkeyPatch, config: Path, stdin: str, *args: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["users", "add", *args, "--password-stdin", "--config", str(config)])


def test_first_admin(
    monkeypatch: pytest.MonkeyPatch, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, config, "a long password\n", "boss", "--role", "admin") == 0
    assert "user boss (admin) created" in capsys.readouterr().out
    conn = open_store(config.parent / "state" / "appliance.db")
    try:
        user, _ = authenticate(conn, "boss", "a long password")
        assert user is not None and user.role == "admin"
        entry = audit.entries(conn)[0]
        assert (entry["action"], entry["actor_kind"], entry["target"]) == ("user.add", "cli", "boss")
    finally:
        conn.close()


def test_refusals_and_replace(
    monkeypatch: pytest.MonkeyPatch, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, config, "short\n", "boss", "--role", "admin") == 1
    assert "8 to 256 characters" in capsys.readouterr().err
    assert run(monkeypatch, config, "a long password\n", "boss", "--role", "admin") == 0
    assert run(monkeypatch, config, "another password\n", "boss", "--role", "admin") == 1
    assert "exists" in capsys.readouterr().err
    assert run(monkeypatch, config, "another password\n", "boss", "--role", "engineer", "--replace") == 0
    conn = open_store(config.parent / "state" / "appliance.db")
    try:
        user, _ = authenticate(conn, "boss", "another password")
        assert user is not None and user.role == "engineer"
    finally:
        conn.close()


def test_role_is_checked_by_the_parser(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    with pytest.raises(SystemExit):
        run(monkeypatch, config, "a long password\n", "boss", "--role", "root")


def test_token_creation_is_audited(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "mes", "--role", "viewer", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("apl_")
    conn = open_store(config.parent / "state" / "appliance.db")
    try:
        entry = audit.entries(conn)[0]
    finally:
        conn.close()
    assert (entry["action"], entry["target"], entry["details"]) == (
        "token.create",
        "mes",
        {"id": 1, "role": "viewer", "expires_ms": None},
    )
    assert token not in str(entry)


def token_cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["token", *args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_token_list_revoke_and_expiry(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = token_cli(config, capsys, "create", "mes", "--role", "viewer", "--expires-days", "30")
    assert code == 0 and "expires 20" in out
    mes = out.strip().splitlines()[-1]
    assert mes.startswith("apl_")  # the token alone on the last line, as before
    _, out, _ = token_cli(config, capsys, "create", "scada", "--role", "operator")
    scada1 = out.strip().splitlines()[-1]
    _, out, _ = token_cli(config, capsys, "create", "scada", "--role", "operator")  # a rotation
    scada2 = out.strip().splitlines()[-1]
    code, out, _ = token_cli(config, capsys, "list")
    assert code == 0 and mes not in out and scada1 not in out  # never a secret
    rows = out.strip().splitlines()[1:]
    assert [r.split()[:3] for r in rows] == [
        ["1", "mes", "viewer"],
        ["2", "scada", "operator"],
        ["3", "scada", "operator"],
    ]
    assert "active, expires" in rows[0] and rows[1].endswith("active")

    conn = open_store(config.parent / "state" / "appliance.db")
    try:
        assert verify_token(conn, scada1) is not None
        assert token_cli(config, capsys, "revoke", "2")[0] == 0  # by id: the old one only
        assert verify_token(conn, scada1) is None and verify_token(conn, scada2) is not None
        code, out, _ = token_cli(config, capsys, "revoke", "scada")  # by name: every active one
        assert code == 0 and out.strip() == "revoked token 3 (scada, role operator)"
        assert verify_token(conn, scada2) is None and verify_token(conn, mes) is not None
        code, _, err = token_cli(config, capsys, "revoke", "scada")
        assert code == 1 and "already ended" in err
        code, _, err = token_cli(config, capsys, "revoke", "nobody")
        assert code == 1 and "no token" in err
        code, _, err = token_cli(config, capsys, "create", "x", "--role", "viewer", "--expires-days", "0")
        assert code == 1 and "expiry" in err
        revokes = [e for e in audit.entries(conn) if e["action"] == "token.revoke"]
        assert [(e["target"], e["details"]["id"], e["actor_kind"]) for e in revokes] == [
            ("scada", 3, "cli"),
            ("scada", 2, "cli"),
        ]
        created = next(e for e in audit.entries(conn) if e["target"] == "mes")
        assert created["details"]["expires_ms"] > created["ts_ms"] + 29 * 86_400_000
    finally:
        conn.close()
    _, out, _ = token_cli(config, capsys, "list")
    assert "ended" in out.splitlines()[2] and "ended" in out.splitlines()[3]
