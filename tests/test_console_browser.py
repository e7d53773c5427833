"""The console in a real browser (Debian's Chromium through Playwright), on a loopback federation: sign-in
and sign-out in Chinese and English, the security headers and cookie flags, the CSRF refusal, the offline
API documentation, the analyst's main path (catalog with names, builder and preview, submission, a
query job, results with charts and an XLSX download, a pack job watched as it progresses, the budget)
and the operator's (endpoints, connectors, principals and keys, quotas, a schedule run now, metrics).
No request leaves loopback (the fixture fails the module otherwise). Tests run in file order and share
the federation's state."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from console_fixture import Console, console_browser, console_federation  # noqa: F401 (fixtures)
from openpyxl import load_workbook

from gateway.console.security import CONSOLE_CSP, DOCS_CSP
from gateway.dev.localfed import Federation
from gateway.i18n import Lang, translate

# The module starts a federation and a browser once; on a loaded machine that alone can take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# The console submits queries and indicator runs without an analyst's signature (the analyst's private key
# never reaches the gateway), so only "*" rules cover them; the synthetic county's connectors opt in to those.
RULE_ANALYSTS = ("*",)


def test_sign_in_shows_the_role_home_in_chinese_then_english(
    console: Console, console_fed: Federation
) -> None:
    response = console.goto("/")
    assert console.page.url.endswith("/console/signin")
    assert response is not None
    console.screenshot("signin")
    assert console.page.locator("h1").inner_text() == translate("console.sign_in", Lang.ZH)

    console.sign_in(console_fed.keys["analyst"])
    assert translate("console.welcome", Lang.ZH, name="analyst") in console.page.locator("h1").inner_text()
    session = console.cookie("fedgate_session")
    assert session is not None
    assert session["httpOnly"] is True and session["sameSite"] == "Strict" and session["path"] == "/console"

    console.use_language("en")
    assert console.page.locator("h1").inner_text() == translate("console.welcome", Lang.EN, name="analyst")
    assert console.page.locator("html").get_attribute("lang") == "en"
    console.use_language("zh-CN")
    console.sign_out()
    # Signed out: the session is gone on the server, so the old cookie opens nothing.
    assert console.cookie("fedgate_session") is None
    console.goto("/console/")
    assert console.page.url.endswith("/console/signin")


def test_a_wrong_key_is_refused_on_the_page(console: Console) -> None:
    console.goto("/console/signin")
    console.page.fill("#api_key", "fgk_not-a-key")
    console.page.click("#signin-form button[type=submit]")
    assert console.page.locator("p.error").inner_text() == translate("console.signin_refused", Lang.ZH)
    assert console.cookie("fedgate_session") is None


def test_pages_carry_the_security_headers(console: Console, console_fed: Federation) -> None:
    response = console.page.goto(console.base_url + "/console/signin")
    assert response is not None
    headers = response.headers
    assert headers["content-security-policy"] == CONSOLE_CSP
    assert "script-src 'self';" in CONSOLE_CSP and "unsafe-inline" not in CONSOLE_CSP
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in CONSOLE_CSP
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


def test_a_state_change_without_the_csrf_token_is_refused(console: Console, console_fed: Federation) -> None:
    console.sign_in(console_fed.keys["analyst"])
    cookie = console.cookie("fedgate_session")
    assert cookie is not None
    # The session's own cookie, but no token: refused, and the session is still signed in.
    with httpx.Client(base_url=console.base_url, cookies={"fedgate_session": str(cookie["value"])}) as client:
        refused = client.post("/console/signout", data={"csrf_token": "forged"})
        assert refused.status_code == 403
        assert client.get("/console/", follow_redirects=False).status_code == 200
    # From inside the page, a fetch without the header is refused too; with it, it would be accepted.
    status = console.page.evaluate(
        "() => fetch('/console/signout', {method: 'POST', credentials: 'same-origin'}).then(r => r.status)"
    )
    assert status == 403
    console.goto("/console/")
    assert console.page.url.endswith("/console/")
    console.sign_out()


def test_the_api_documentation_renders_offline(console: Console) -> None:
    response = console.goto("/docs")
    assert response is not None
    assert response.headers["content-security-policy"] == DOCS_CSP  # type: ignore[attr-defined]
    console.page.wait_for_selector(".swagger-ui .info .title")
    assert "fedgate" in console.page.locator(".swagger-ui .info .title").inner_text()
    console.goto("/redoc")
    console.page.wait_for_selector("h1")
    assert "fedgate" in console.page.locator("h1").first.inner_text()
    console.expect_no_outside_requests()


def _zh(console: Console) -> None:
    console.context.add_cookies([{"name": "fedgate_lang", "value": "zh-CN", "url": console.base_url}])


def test_the_analyst_builds_previews_submits_runs_and_downloads(
    console: Console, console_fed: Federation
) -> None:
    _zh(console)
    console.sign_in(console_fed.keys["analyst"])
    console.screenshot("home-analyst")
    console.goto("/console/analyst/catalog")
    # Code-list names beside codes: the villages' names come from the register's published list.
    villages = console.page.locator("details.dimension[data-ref='register.persons.village'] table.domain td")
    assert (villages.nth(0).text_content() or "").startswith("3309")
    assert (villages.nth(1).text_content() or "").endswith(("社区", "村"))
    console.screenshot("analyst-catalog")

    console.goto("/console/analyst/queries/new")
    console.page.fill("#purpose", "各村家庭可支配收入分段，用于月度监测报告")
    console.page.click("#preview-button")
    console.page.wait_for_selector("#preview .preview-table")
    assert translate("console.preview_title", Lang.ZH) in console.page.locator("#preview h2").inner_text()
    assert float(console.page.locator("#preview .half-width").first.inner_text().replace(",", "")) > 0
    console.screenshot("analyst-builder")
    console.page.click("#submit-button")
    console.page.wait_for_url("**/console/analyst/queries/q-*")
    # The departments' pre-approval rules cover it: approved, with each department's rule shown.
    assert console.page.locator("#query-state").inner_text() == translate("console.state_approved", Lang.ZH)
    assert console.page.locator("#approvals tbody tr").count() == 4

    console.page.once("dialog", lambda dialog: dialog.accept())
    console.page.click("#run-button")
    console.page.wait_for_url("**/console/jobs/*")
    console.page.wait_for_selector("#job-result-link", timeout=180_000)
    console.page.click("#job-result-link")
    console.page.wait_for_selector("#result-table")
    assert console.page.locator(".chart svg").count() >= 1
    assert console.page.locator("#result-table tbody tr").count() > 10
    console.screenshot("analyst-result")

    with console.page.expect_download() as download:
        console.page.click("#download-xlsx")
    path = download.value.path()
    book = load_workbook(io.BytesIO(path.read_bytes()))
    assert book.sheetnames[-1] == translate("columns.notes_sheet", Lang.ZH)
    header = [c.value for c in book[book.sheetnames[0]][1]]
    assert header[:2] == ["village", translate("columns.name_suffix", Lang.ZH, dimension="village")]
    notes = " ".join(str(r[0].value) for r in book[book.sheetnames[-1]].iter_rows())
    assert "ε = 1" in notes and "财产性收入" in notes
    with console.page.expect_download() as download:
        console.page.click("#download-csv")
    assert download.value.path().read_bytes().startswith("\ufeff".encode())

    console.goto("/console/analyst/budget")
    row = console.page.locator("#budget tr[data-year='2025'] .remaining")
    assert float(row.inner_text()) < 10


def test_the_analyst_watches_a_pack_job_progress(console: Console) -> None:
    console.goto("/console/analyst/runs")
    console.page.click("form.pack-run[data-pack='monthly'] button[type=submit]")
    console.page.wait_for_url("**/console/jobs/*")
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = console.page.locator("#job-state")
        if state.count():
            seen.add(console.page.locator("#job-steps").inner_text())
            if state.get_attribute("data-state") in ("succeeded", "failed", "cancelled", "interrupted"):
                break
        time.sleep(0.3)
    console.page.wait_for_selector("section.indicator")
    assert console.page.locator("#job-state").get_attribute("data-state") == "succeeded"
    # The page moved with the job: more than the final count was seen on the way.
    assert len(seen) >= 2, seen
    assert console.page.locator("section.indicator .chart svg").count() >= 1
    console.screenshot("analyst-pack-job")
    console.use_language("en")
    assert console.page.locator("#job-state").inner_text() == translate("console.job_succeeded", Lang.EN)
    console.goto("/console/analyst/queries")
    assert console.page.locator("h1").inner_text() == translate("console.nav_queries", Lang.EN)
    console.screenshot("analyst-queries-en")
    console.sign_out()


def test_the_operator_manages_endpoints_connectors_keys_quotas_and_schedules(
    console: Console, console_fed: Federation
) -> None:
    console.page.on("dialog", lambda dialog: dialog.accept())
    console.sign_in(console_fed.keys["operator"])
    assert console.page.locator("html").get_attribute("lang") == "en"
    console.goto("/console/operator/endpoints")
    assert console.page.locator("#endpoints tbody tr").count() == len(console_fed.connectors)
    console.page.fill("#url", "http://127.0.0.1:9")
    console.page.click("#allow-endpoint button")
    console.page.wait_for_selector("#endpoints code:text('http://127.0.0.1:9')")
    console.page.locator("#endpoints tr", has_text="http://127.0.0.1:9").locator("button").click()
    console.page.wait_for_load_state()
    assert console.page.locator("#endpoints tbody tr").count() == len(console_fed.connectors)

    console.goto("/console/operator/connectors")
    civil = console.page.locator("tr[data-connector='civil']")
    civil.locator("button").click()
    console.page.wait_for_load_state()
    assert translate("console.disabled", Lang.EN) in civil.inner_text()
    civil.locator("button").click()
    console.page.wait_for_load_state()
    assert translate("console.enabled", Lang.EN) in civil.inner_text()

    console.goto("/console/operator/principals")
    console.page.fill("#name", "newcomer")
    console.page.select_option("#role", "analyst")
    console.page.fill("#expires_days", "7")
    console.page.click("#create-principal button")
    key = console.page.locator("#new-key-value").inner_text()
    assert key.startswith("fgk_")
    console.screenshot("operator-principals")
    with httpx.Client(base_url=console.base_url, headers={"authorization": f"Bearer {key}"}) as client:
        assert client.get("/v1/me").json()["name"] == "newcomer"
        console.page.locator("tr[data-principal='newcomer'] button").click()
        console.page.wait_for_load_state()
        assert console.page.locator("tr[data-principal='newcomer'] .status").inner_text() == translate(
            "console.key_revoked", Lang.EN
        )
        assert client.get("/v1/me").status_code == 401

    console.goto("/console/operator/quotas")
    console.page.fill("tr[data-analyst='other-analyst'] input[name=epsilon]", "2")
    console.page.locator("tr[data-analyst='other-analyst'] button").click()
    console.page.wait_for_load_state()
    assert console.page.locator("tr[data-analyst='other-analyst'] .quota").inner_text() == "2"

    console.goto("/console/operator/schedules")
    console.page.fill("#s-name", "monthly-previous")
    console.page.select_option("#s-pack", "monthly")
    console.page.click("#create-schedule button")
    console.page.wait_for_selector("tr[data-schedule='monthly-previous']")
    console.screenshot("operator-schedules")
    console.page.locator("tr[data-schedule='monthly-previous'] button[data-action-name='pause']").click()
    console.page.wait_for_load_state()
    assert console.page.locator(
        "tr[data-schedule='monthly-previous'] .schedule-state"
    ).inner_text() == translate("console.schedule_paused", Lang.EN)
    console.page.locator("tr[data-schedule='monthly-previous'] button[data-action-name='run']").click()
    console.page.wait_for_url("**/console/jobs/*")
    assert console.page.locator("h1").inner_text().startswith(translate("console.job", Lang.EN))

    console.goto("/console/operator/metrics")
    assert console.page.locator("#metrics tbody tr").count() > 0
    console.use_language("zh-CN")
    assert console.page.locator("h1").inner_text() == translate("console.nav_metrics", Lang.ZH)
    console.screenshot("operator-metrics")
    # The operator's pages are the operator's: an analyst's are refused.
    refused = console.goto("/console/analyst/budget")
    assert refused is not None and refused.status == 403  # type: ignore[attr-defined]
    console.sign_out()
    console.expect_no_outside_requests()
