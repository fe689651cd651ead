"""The console in a real browser (system Chromium via Playwright), against a running appliance.

Screenshots of every page land in test-artifacts/screenshots/ (1280x800, a 10-inch panel PC).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.web.support import PASSWORDS, SCREENSHOTS, Console

pytestmark = pytest.mark.browser
PANEL = {"width": 1280, "height": 800}


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; console errors fail the test."""
    context = browser.new_context(viewport=PANEL, base_url=console.url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(10_000)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def log_in(page: Any, user: str, password: str | None = None) -> None:
    """Fill in the login form."""
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password or PASSWORDS[user])
    page.click("button[type=submit]")


def until(page: Any, check: Any, timeout: float = 10.0) -> Any:
    """Poll `check()` from Python until it is truthy (the CSP forbids Playwright's in-page eval)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        page.wait_for_timeout(50)
    return value


def shot(page: Any, name: str) -> None:
    """Save a screenshot as a test artefact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_login_and_logout(page: Any, console: Console) -> None:
    page.goto("/results")
    assert "/login?next=" in page.url
    shot(page, "login")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "Wrong user name or password" in page.inner_text(".message.error")
    page.fill("input[name=password]", PASSWORDS["operator"])
    page.click("button[type=submit]")
    page.wait_for_url("**/results")
    assert "operator" in page.inner_text(".who")
    cookie = next(c for c in page.context.cookies() if c["name"] == "appliance_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.goto("/")
    assert "/login" in page.url


def test_live_view_shows_an_image_that_changes(page: Any, console: Console) -> None:
    log_in(page, "viewer")
    page.wait_for_url(f"{console.url}/")
    img = page.locator("img[data-live-camera=cam1]")
    until(page, lambda: img.get_attribute("data-version"))
    first_src = img.get_attribute("src")  # before the version: the script sets src first
    first = img.get_attribute("data-version")
    until(page, lambda: img.get_attribute("data-version") not in (None, first))
    assert img.get_attribute("src") != first_src and img.get_attribute("src").startswith("blob:")
    until(page, lambda: img.evaluate("el => el.complete && el.naturalWidth > 0"))
    tile = page.inner_text("[data-camera=cam1] .verdict-tile")
    assert "PASS" in tile or "FAIL" in tile  # words, not colour alone
    for _ in range(5):  # the tile always names the part whose image is on screen
        shown = img.evaluate(
            "el => [el.dataset.part,"
            " document.querySelector('[data-camera=cam1] [data-field=part]').textContent]"
        )
        assert shown[0] and shown[0] == shown[1].strip()
        page.wait_for_timeout(150)
    until(page, lambda: "%" in page.inner_text(".shift [data-field=yield]"))
    page.wait_for_timeout(1200)  # let the chart and the counters settle for the picture
    shot(page, "live")


def test_result_detail_shows_overlay(page: Any, console: Console) -> None:
    part = console.failing_part()
    console.retain(part)
    log_in(page, "viewer")
    page.goto(f"/results/{part['part_id']}")
    boxes = page.locator("svg.overlay g.defect rect")
    assert boxes.count() == len(part["defects"]) >= 1
    assert page.locator("svg.overlay image.heat").count() == 1
    assert "Image retained on disk" in page.inner_text("figcaption")
    assert "P(defect)" in page.inner_text("section.panel table thead")  # empty: no calibration here
    with httpx.Client(
        base_url=console.url, headers={"Authorization": f"Bearer {console.tokens['viewer']}"}
    ) as api:
        image = api.get(f"/api/parts/{part['part_id']}/image.jpg")
        heat = api.get(f"/api/parts/{part['part_id']}/map.png")
    assert image.status_code == 200 and image.headers["x-image-source"] == "retained"
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    page.click("label[for=show-boxes]")
    assert not boxes.first.is_visible()
    page.click("label[for=show-boxes]")
    shot(page, "result-detail")
    page.goto("/results?verdict=fail")
    assert page.locator("table.results tbody tr").count() >= 1
    assert "FAIL" in page.inner_text("table.results tbody tr >> nth=0")
    shot(page, "results")


def test_unretained_image_says_so(page: Any, console: Console) -> None:
    conn = console.db()
    try:
        # A passed part with no retained image (failures and sampled passes keep theirs on disk).
        oldest = conn.execute(
            "SELECT part_id FROM results WHERE verdict = 'pass' AND part_id NOT IN "
            "(SELECT part_id FROM images) ORDER BY seq LIMIT 1"
        ).fetchone()["part_id"]
    finally:
        conn.close()
    deadline = time.monotonic() + 15
    while console.service.live.recent(oldest) is not None:  # until it leaves the recent-frames ring
        assert time.monotonic() < deadline
        time.sleep(0.2)
    log_in(page, "viewer")
    page.goto(f"/results/{oldest}")
    assert "Image not retained" in page.inner_text(".no-image")
    assert page.locator("svg.overlay").count() == 0


def test_review_label_round_trip(page: Any, console: Console) -> None:
    part = console.failing_part()
    console.retain(part, reason="uncertain")
    log_in(page, "operator")
    page.goto("/review")
    assert part["part_id"] in page.inner_text(".detail-side")  # the newest case comes first
    shot(page, "review")
    page.keyboard.press("g")  # one key: good part, against the machine's fail
    page.wait_for_url("**/review?labelled=*")
    assert part["part_id"] in page.inner_text(".message.ok")
    with httpx.Client(
        base_url=console.url, headers={"Authorization": f"Bearer {console.tokens['viewer']}"}
    ) as api:
        labels = api.get(f"/api/parts/{part['part_id']}/labels").json()
        queue = api.get("/api/review", params={"limit": 500}).json()
    assert [(x["verdict"], x["user"], x["defect_class"]) for x in labels] == [("pass", "operator", None)]
    assert part["part_id"] not in {c["part_id"] for c in queue["cases"]}
    conn = console.db()
    try:
        row = conn.execute(
            "SELECT verdict, user FROM labels WHERE part_id = ?", (part["part_id"],)
        ).fetchone()
        disputed = conn.execute(
            "SELECT 1 FROM hard_cases WHERE part_id = ? AND reason = 'disputed'", (part["part_id"],)
        ).fetchone()
        audit = conn.execute(
            "SELECT actor, actor_kind, address, details FROM audit WHERE action = 'label' AND target = ?",
            (part["part_id"],),
        ).fetchone()
    finally:
        conn.close()
    assert tuple(row) == ("pass", "operator")
    assert disputed is not None
    assert (audit["actor"], audit["actor_kind"], audit["address"]) == ("operator", "user", "127.0.0.1")
    assert json.loads(audit["details"])["disputed"] is True


def test_viewer_cannot_change_settings(page: Any, console: Console) -> None:
    log_in(page, "viewer")
    page.wait_for_url(f"{console.url}/")
    page.goto("/settings")
    assert page.locator("textarea[name=toml]").count() == 0
    assert "only admins change settings" in page.inner_text("main")
    shot(page, "settings-viewer")
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    text = console.config_path.read_text()
    form = page.request.post("/settings", form={"toml": text, "action": "save", "csrf_token": csrf})
    assert form.status == 403
    api = page.request.put(
        "/api/settings",
        data=json.dumps({"toml": text}),
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert api.status == 403
    with console.api("viewer") as client:
        assert client.put("/api/settings", json={"toml": text}).status_code == 403
    page.goto("/review")
    assert page.locator("button[data-key=g]").count() == 0  # no label buttons for a viewer
    page.goto("/admin/users")
    assert page.locator("h1").inner_text() == "Not allowed"
    page.goto("/results/no-such-part")
    assert page.locator("h1").inner_text() == "Not found"  # a page, not JSON, for people


def test_post_without_csrf_token_is_refused(page: Any, console: Console) -> None:
    part = console.failing_part()
    log_in(page, "operator")
    page.wait_for_url(f"{console.url}/")
    url = f"/api/parts/{part['part_id']}/labels"
    refused = page.request.post(
        url, data=json.dumps({"verdict": "fail"}), headers={"Content-Type": "application/json"}
    )
    assert refused.status == 403
    form = page.request.post(f"/results/{part['part_id']}/label", form={"verdict": "fail"})
    assert form.status == 403
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    accepted = page.request.post(
        url,
        data=json.dumps({"verdict": "fail"}),
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )
    assert accepted.status == 201


def test_lockout_after_repeated_failures(page: Any, console: Console) -> None:
    with console.api("admin") as api:
        api.post("/api/users", json={"name": "locky", "role": "operator", "password": "right password"})
    limit = console.service.settings.web.login_max_failures
    for attempt in range(limit):
        log_in(page, "locky", "wrong password")
        message = page.inner_text(".message.error")
        if attempt < limit - 1:
            assert "Wrong user name or password" in message
            page.wait_for_timeout(50 * 2**attempt + 50)  # the backoff before the next try
    assert "locked" in message
    log_in(page, "locky", "right password")  # the right password does not help while locked
    assert "locked" in page.inner_text(".message.error")
    assert "/login" in page.url
    shot(page, "login-locked")
    # An admin unlocks on the Users page; then the right password works.
    page.context.clear_cookies()
    log_in(page, "admin")
    page.goto("/admin/users")
    assert "locked until" in page.inner_text("table")
    shot(page, "users")
    row = page.locator("tr", has_text="locky")
    row.locator("button", has_text="Unlock").click()
    page.wait_for_url("**/admin/users?done=*")
    page.context.clear_cookies()
    log_in(page, "locky", "right password")
    page.wait_for_url(f"{console.url}/")
    with console.api("admin") as api:
        kinds = [(e["action"], e["result"]) for e in api.get("/api/audit", params={"limit": 50}).json()]
    assert ("login", "denied") in kinds and ("login", "failed") in kinds and ("user.update", "ok") in kinds


def test_screenshots_of_the_other_pages(page: Any, console: Console) -> None:
    log_in(page, "admin")
    page.wait_for_url(f"{console.url}/")
    for path, name, heading in [
        ("/models", "models", "Models"),
        ("/health", "health", "Health"),
        ("/settings", "settings-admin", "Settings"),
        ("/admin/audit", "audit", "Audit log"),
        ("/docs", "api-docs", "API reference"),
    ]:
        page.goto(path)
        assert heading in page.inner_text("h1")
        page.wait_for_load_state("networkidle")
        shot(page, name)
    page.goto("/health")
    assert "Frames kept for refinement" in page.content()  # deferred escalations' frames
    page.goto("/settings")
    page.click("button[value=validate]")
    assert "The file is valid" in page.inner_text(".message.ok")


def test_admin_revokes_a_token_on_the_tokens_page(page: Any, console: Console) -> None:
    from appliance.auth import add_token

    made, secret = console.write(lambda c: add_token(c, "line-pc", "operator"))
    log_in(page, "admin")
    page.wait_for_url(f"{console.url}/")
    page.click("nav >> text=Tokens")
    row = page.locator("tr", has_text="line-pc")
    assert "active" in row.inner_text() and secret not in page.content()
    shot(page, "tokens")
    row.locator("button", has_text="Revoke").click()
    page.wait_for_url("**/admin/tokens?done=*")
    assert "ended" in page.locator("tr", has_text="line-pc").inner_text()
    answer = httpx.get(f"{console.url}/api/results", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401
    with console.api("admin") as api:
        entry = api.get("/api/audit", params={"action": "token.revoke"}).json()[0]
    assert (entry["actor"], entry["target"], entry["details"]) == ("admin", "line-pc", {"id": made.id})
