"""The console in a real browser: sign-in and sign-out in Chinese and English, the security headers and
cookie flags, the CSRF refusal, and the offline API documentation; no request leaves loopback."""

from __future__ import annotations

import httpx
import pytest
from console_fixture import Console, console_browser, console_federation  # noqa: F401 (fixtures)

from gateway.console.security import CONSOLE_CSP, DOCS_CSP
from gateway.dev.localfed import Federation
from gateway.i18n import Lang, translate

pytestmark = pytest.mark.slow


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
