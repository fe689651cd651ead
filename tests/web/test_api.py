"""The JSON API over real HTTP: authentication, roles, CSRF, bad input, labels, settings, users."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from appliance.web.app import create_app
from tests.web.support import PASSWORDS, Console


@contextmanager
def session(console: Console, user: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a session cookie of `user`, and the session's CSRF token."""
    with httpx.Client(base_url=console.url, timeout=10, follow_redirects=False) as client:
        yield client, _login(client, user)


def _login(client: httpx.Client, user: str) -> str:
    page = client.get("/login")
    token = client.cookies.get("appliance_login_csrf")
    assert page.status_code == 200 and token
    answer = client.post(
        "/login", data={"username": user, "password": PASSWORDS[user], "csrf_token": token, "next": "/"}
    )
    assert answer.status_code == 303, answer.text
    live = client.get("/")
    csrf = live.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert csrf
    return csrf


def test_health_is_open_and_results_need_auth(console: Console) -> None:
    assert httpx.get(f"{console.url}/api/health").json()["status"] in {"ok", "degraded"}
    assert httpx.get(f"{console.url}/api/results").status_code == 401
    bad = httpx.get(f"{console.url}/api/results", headers={"Authorization": "Bearer apl_nope"})
    assert bad.status_code == 401
    with console.api("viewer") as api:
        rows = api.get("/api/results", params={"limit": 5}).json()
    assert len(rows) == 5
    assert rows[0]["seq"] > rows[-1]["seq"]  # newest first
    assert {"schema", "msg_id", "part_id", "revision", "verdict", "defects", "latency_ms", "model"} <= set(
        rows[0]
    )


def test_security_headers_and_no_inline_scripts(console: Console) -> None:
    response = httpx.get(f"{console.url}/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text and " on" + "click=" not in response.text


def test_body_cap_and_validation(console: Console) -> None:
    with console.api("admin") as api:
        huge = api.put(
            "/api/settings", content=b"x" * 1_200_000, headers={"Content-Type": "application/json"}
        )
        assert huge.status_code == 413
        assert api.get("/api/results", params={"limit": 0}).status_code == 422
        assert api.get("/api/results", params={"since_ms": 2**70}).status_code == 422
        assert api.get("/api/parts/..%2F..%2Fetc").status_code in {404, 422}
        assert api.post("/api/parts/x/labels", json={"verdict": "maybe"}).status_code == 422
        assert api.post("/api/parts/x/labels", json={"verdict": "pass", "extra": 1}).status_code == 422
        assert api.post("/api/parts/nope-1/labels", json={"verdict": "pass"}).status_code == 404
        surrogate = api.post(
            "/api/users", content=b'{"name": "x1", "role": "viewer", "password": "\\ud800\\ud800abcdefgh"}'
        )
        assert surrogate.status_code == 422


def test_label_round_trip_counts_as_dispute(console: Console) -> None:
    part = console.failing_part()
    with console.api("operator") as api:
        answer = api.post(f"/api/parts/{part['part_id']}/labels", json={"verdict": "pass"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["disputed"] is True
        labels = api.get(f"/api/parts/{part['part_id']}/labels").json()
    assert [(x["verdict"], x["user"]) for x in labels] == [("pass", "test-operator")]
    conn = console.db()
    try:
        dispute = conn.execute(
            "SELECT reason FROM hard_cases WHERE part_id = ? AND reason = 'disputed'", (part["part_id"],)
        ).fetchone()
        audit = conn.execute(
            "SELECT actor, actor_kind, result FROM audit WHERE action = 'label' AND target = ?",
            (part["part_id"],),
        ).fetchone()
    finally:
        conn.close()
    assert dispute is not None
    assert tuple(audit) == ("test-operator", "token", "ok")
    with console.api("viewer") as api:
        assert api.post(f"/api/parts/{part['part_id']}/labels", json={"verdict": "pass"}).status_code == 403


def test_a_kept_defect_map_is_served_from_its_row_and_from_an_older_file(console: Console) -> None:
    part = console.failing_part()
    maps = {}
    with console.api("viewer") as api:
        for map_file in (True, False):  # kept before schema version 5 (a file), then as now
            console.retain(part, map_file=map_file)
            image = api.get(f"/api/parts/{part['part_id']}/image.jpg")
            assert image.status_code == 200 and image.headers["x-image-source"] == "retained"
            answer = api.get(f"/api/parts/{part['part_id']}/map.png")
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            maps[map_file] = answer.content
    assert maps[True] == maps[False]
    conn = console.db()
    try:
        row = conn.execute(
            "SELECT map_path, map_png FROM images WHERE part_id = ?", (part["part_id"],)
        ).fetchone()
    finally:
        conn.close()
    assert row["map_path"] is None and row["map_png"]


def test_session_writes_need_the_csrf_token(console: Console) -> None:
    part = console.failing_part()
    with session(console, "operator") as (client, csrf):
        url = f"/api/parts/{part['part_id']}/labels"
        assert client.post(url, json={"verdict": "fail"}).status_code == 403
        assert (
            client.post(url, json={"verdict": "fail"}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        )
        assert client.post(url, json={"verdict": "fail"}, headers={"X-CSRF-Token": csrf}).status_code == 201
        assert client.post("/logout").status_code == 403
        assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert client.get("/api/me").status_code == 401  # the session is gone


def _walk(routes: list[Any]) -> Iterator[Any]:
    """Routes, with included routers flattened (newer FastAPI includes them lazily)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _walk(inner.routes) if inner is not None else [route]


def test_every_state_changing_route_checks_csrf(console: Console) -> None:
    """Walk the routes: no POST/PUT/PATCH/DELETE may go through with a session but no CSRF token."""
    app = create_app(console.service)
    checked: list[str] = []
    with session(console, "admin") as (client, _):
        for route in _walk(app.routes):
            methods = getattr(route, "methods", set()) - {"GET", "HEAD"}
            path = getattr(route, "path", "")
            if not methods or path == "/login":
                continue
            concrete = path.replace("{part_id}", "p-1").replace("{name}", "viewer")
            for method in methods:
                answer = client.request(method, concrete, data={"x": "1"})
                assert answer.status_code == 403, (
                    f"{method} {path} answered {answer.status_code} without CSRF"
                )
                checked.append(f"{method} {path}")
    assert len(checked) >= 8, checked


def test_settings_viewer_refused_admin_validated_saved_audited(console: Console) -> None:
    original = console.config_path.read_text()
    with console.api("viewer") as api:
        assert api.get("/api/settings").json()["file"] == str(console.config_path)
        assert api.put("/api/settings", json={"toml": original}).status_code == 403
    with console.api("admin") as api:
        bad = api.put("/api/settings", json={"toml": original.replace("fps = 20", "fps = -1")})
        assert bad.status_code == 422
        assert any("lines[0].cameras[0].source.fps" in e for e in bad.json()["detail"]["errors"])
        missing = api.put("/api/settings", json={"toml": original.replace('"dark"', '"nosuch"')})
        assert "no model package 'nosuch'" in missing.json()["detail"]["errors"][0]
        dry = api.put("/api/settings", json={"toml": original, "dry_run": True})
        assert dry.json() == {
            "saved": False,
            "valid": True,
            "path": str(console.config_path),
            "restart_required": False,
        }
        changed = original.replace("deadline_ms = 500", "deadline_ms = 450")
        saved = api.put("/api/settings", json={"toml": changed})
        assert saved.status_code == 200 and saved.json()["restart_required"] is True
        assert api.get("/api/settings").json()["restart_required"] is True
        entries = api.get("/api/audit", params={"action": "config.update"}).json()
    assert console.config_path.read_text() == changed
    assert console.config_path.with_name("appliance.toml.previous").read_text() == original
    assert entries[0]["result"] == "ok" and "+deadline_ms = 450" in entries[0]["details"]["diff"]
    assert {e["result"] for e in entries} == {"ok", "invalid"}
    console.config_path.write_text(original)


def test_users_api(console: Console) -> None:
    with console.api("admin") as api:
        created = api.post(
            "/api/users", json={"name": "shift-b", "role": "operator", "password": "long enough 1"}
        )
        assert created.status_code == 201
        assert (
            api.post(
                "/api/users", json={"name": "shift-b", "role": "viewer", "password": "long enough 1"}
            ).status_code
            == 409
        )
        assert (
            api.post("/api/users", json={"name": "weak", "role": "viewer", "password": "short"}).status_code
            == 422
        )
        assert api.patch("/api/users/shift-b", json={"role": "viewer"}).json()["role"] == "viewer"
        assert api.patch("/api/users/nobody", json={"role": "viewer"}).status_code == 404
        refused = api.patch("/api/users/admin", json={"role": "viewer"})
        assert refused.status_code == 422 and "last admin" in refused.json()["detail"]
        users = {u["name"]: u for u in api.get("/api/users").json()}
    assert users["shift-b"]["role"] == "viewer"
    assert all("hash" not in key for u in users.values() for key in u)
    with console.api("engineer") as api:
        assert api.get("/api/users").status_code == 403
        assert api.get("/api/audit").status_code == 403


def test_metrics_have_latency_histograms_and_outbox(console: Console) -> None:
    text = httpx.get(f"{console.url}/metrics").text
    assert "appliance_pending_frames_held " in text and "appliance_pending_frames_written_total " in text
    assert 'appliance_inference_latency_ms_bucket{le="+Inf",line="line1",model="bright1",tier="1"}' in text
    assert "appliance_tier_escalation_rate" in text
    assert "appliance_outbox_depth" in text
    assert "appliance_frames_dropped_total" in text


def test_live_frame_long_poll_returns_a_newer_frame(console: Console) -> None:
    with console.api("viewer") as api:
        first = api.get("/api/live/cam1.jpg")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        version = int(first.headers["x-frame-version"])
        start = time.monotonic()
        newer = api.get("/api/live/cam1.jpg", params={"after": version, "wait": 5})
        assert int(newer.headers["x-frame-version"]) > version
        assert time.monotonic() - start < 5
        assert api.get("/api/live/nosuch.jpg").status_code == 404
        state = api.get("/api/live").json()
    assert state["cameras"]["cam1"]["verdict"] in {"pass", "fail"}
    assert state["shift"]["lines"]["line1"]["total"] > 0


@pytest.mark.parametrize(
    "path", ["/", "/results", "/review", "/models", "/health", "/settings", "/admin/users", "/admin/tokens"]
)
def test_pages_redirect_to_login(console: Console, path: str) -> None:
    answer = httpx.get(f"{console.url}{path}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


HOSTILE = [
    "/results?since=not-a-date&period=custom",
    "/results?period=custom&since=0001-01-01T00:00&until=9999-12-31T23:59",
    "/results?verdict=maybe",
    "/results?before_seq=-4",
    "/results/%00bad",
    "/results/nope-404",
    "/review?offset=-1",
    "/review?labelled=%3Cscript%3E",
    "/admin/audit?action=%27%3B--",
    "/admin/users?done=%3Cscript%3Ealert(1)%3C/script%3E",
    "/api/live/%2e%2e.jpg?wait=abc",
]


def test_hostile_page_requests_get_4xx_not_5xx(console: Console) -> None:
    with session(console, "admin") as (client, _):
        for path in HOSTILE:
            answer = client.get(path)
            assert answer.status_code < 500, (path, answer.text[:300])
            assert "<script>alert" not in answer.text
        off_site = client.get("/login?next=//evil.example/")
    assert off_site.status_code == 303 and off_site.headers["location"] == "/"  # never off-site


def test_tokens_listed_and_revoked_by_an_admin(console: Console) -> None:
    from appliance.auth import add_token, expiry_ms

    made, secret = console.write(lambda c: add_token(c, "mes-api", "viewer", expires_ms=expiry_ms(7)))
    with httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as mes:
        assert mes.get("/api/results", params={"limit": 1}).status_code == 200
        with console.api("viewer") as viewer:
            assert viewer.get("/api/tokens").status_code == 403
            assert viewer.post(f"/api/tokens/{made.id}/revoke").status_code == 403
        with console.api("admin") as api:
            listed = {t["id"]: t for t in api.get("/api/tokens").json()}
            assert listed[made.id]["state"] == "active" and listed[made.id]["expires_ms"] > 0
            assert secret not in str(listed) and "token_sha256" not in str(listed)
            answer = api.post(f"/api/tokens/{made.id}/revoke")
            assert answer.status_code == 200 and answer.json()["state"] == "ended"
            assert api.post(f"/api/tokens/{made.id}/revoke").status_code == 409
            assert api.post("/api/tokens/999999/revoke").status_code == 404
            entries = api.get("/api/audit", params={"action": "token.revoke"}).json()
        assert mes.get("/api/results", params={"limit": 1}).status_code == 401  # refused at once
    assert [(e["result"], e["target"]) for e in entries[:3]] == [
        ("invalid", "999999"),
        ("invalid", str(made.id)),
        ("ok", "mes-api"),
    ]
