"""`appliance users add NAME --role ROLE --password-stdin`: the first admin, from the command line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance import audit
from appliance.auth import authenticate
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
    assert (entry["action"], entry["target"], entry["details"]) == ("token.create", "mes", {"role": "viewer"})
    assert token not in str(entry)
