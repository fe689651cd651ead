"""A running appliance with its console: real Service, simulated line, synthetic models, real HTTP.

One service per test module (starting one takes a second or two); tests that change shared
state (lock a user, label a part) use their own users and parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.auth import add_user, create_token, run_in_transaction
from appliance.store.db import open_store
from tests.web.support import CHROMIUM, CHROMIUM_ARGS, PASSWORDS, Console, start_console


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Console]:
    """The running console with users admin, engineer, operator, viewer and a token per role."""
    root = tmp_path_factory.mktemp("console")
    service, config_path = start_console(root, models_dir)
    try:
        conn = open_store(service.settings.db_path)
        try:
            for role, password in PASSWORDS.items():
                run_in_transaction(conn, lambda c, r=role, p=password: add_user(c, r, r, p))
            tokens = {role: create_token(conn, f"test-{role}", role) for role in PASSWORDS}  # type: ignore[arg-type]
        finally:
            conn.close()
        web = service.components["web"]
        ctx = Console(service, f"http://127.0.0.1:{web.port}", config_path, tokens)  # type: ignore[attr-defined]
        ctx.wait_results(20)
        yield ctx
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium driven by Playwright, or skip."""
    if not CHROMIUM.is_file():
        pytest.skip("install Debian package chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
