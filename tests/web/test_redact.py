"""Camera credentials never reach /api/health, nor a viewer's settings (API and page)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.auth import add_user, create_token, run_in_transaction
from appliance.config import load_settings
from appliance.service import Service
from appliance.store.db import open_store
from appliance.web.redact import redact_settings, redact_text
from appliance.wiring import add_components
from tests.web.support import CONFIG, PASSWORDS
from tests.web.test_api import _login

# A camera whose URL carries credentials three ways: userinfo with '@' in the password, query
# parameters, and a token; plus the same in a comment. Nothing listens on port 9.
STREAM = "http://admin:p@ss-S3CRET1@127.0.0.1:9/video.cgi?user=admin&pwd=S3CRET2&token=S3CRET3&channel=1"
EXTRA = f"""
[[lines.cameras]]
id = "cam2"
source = {{ kind = "stream", url = "{STREAM}" }}
# old camera: rtsp://admin:S3CRET4@10.0.0.9/stream
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[Service, str, str]]:
    root = tmp_path_factory.mktemp("redact")
    config_path = root / "appliance.toml"
    config_path.write_text(CONFIG.format(state=root / "state", models=models_dir) + EXTRA, encoding="utf-8")
    service = Service(load_settings(config_path), config_path=config_path)
    add_components(service)
    service.start()
    try:
        conn = open_store(service.settings.db_path)
        try:
            run_in_transaction(conn, lambda c: add_user(c, "viewer", "viewer", PASSWORDS["viewer"]))
            token = create_token(conn, "reader", "viewer")
        finally:
            conn.close()
        yield service, f"http://127.0.0.1:{service.components['web'].port}", token  # type: ignore[attr-defined]
    finally:
        service.stop()


def assert_clean(text: str) -> None:
    for secret in ("S3CRET1", "S3CRET2", "S3CRET3", "S3CRET4", "p@ss"):
        assert secret not in text, f"{secret} leaked"


def test_health_hides_stream_credentials(service: tuple[Service, str, str]) -> None:
    _, url, _ = service
    health = httpx.get(f"{url}/api/health", timeout=10)
    assert_clean(health.text)
    source = health.json()["components"]["cameras"]["cam2"]["source"]
    assert source == "http://***@127.0.0.1:9/video.cgi?user=***&pwd=***&token=***&channel=1"


def test_viewer_settings_hide_credentials(service: tuple[Service, str, str]) -> None:
    _, url, token = service
    answer = httpx.get(f"{url}/api/settings", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200
    assert_clean(answer.text)
    body = answer.json()
    assert "channel=1" in body["text"] and 'kind = "stream"' in body["text"]
    with httpx.Client(base_url=url, timeout=10) as client:
        _login(client, "viewer")
        page = client.get("/settings")
    assert page.status_code == 200 and "cam2" in page.text
    assert_clean(page.text)


def test_redaction_helpers() -> None:
    tree = {
        "sync": {"target": "s3://bucket/p", "endpoint_url": "https://k:S3CRET1@minio:9000"},
        "x": {
            "api_token": "S3CRET2",
            "password_file": "/run/credentials/x",
            "urls": ["rtsp://u:S3CRET3@c/s"],
        },
    }
    shown = redact_settings(tree)
    assert_clean(repr(shown))
    assert shown["sync"]["target"] == "s3://bucket/p" and shown["x"]["password_file"] == "/run/credentials/x"
    text = (
        'password = "S3CRET1"\n'
        'source = { kind = "stream", url = "rtsp://a:b\\"S3CRET2@c/s", token = \'S3CRET3\' }\n'
    )
    assert_clean(redact_text(text))
    assert 'url = "rtsp://***@c/s"' in redact_text(text)
