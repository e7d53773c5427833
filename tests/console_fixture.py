"""The browser test harness: a real loopback federation and gateway, and Debian's Chromium driven by
Playwright, both started once per test module.

    console_fed      fixture (function `console_federation`): a small synthetic county, five
                     connectors and the gateway (their own uvicorn processes), connectors registered
                     and pre-approved as the departments would: the rules name the analysts of the
                     test module's `RULE_ANALYSTS` ("analyst" by key fingerprint unless it says)
    console          fixture (function `console_browser`): a `Console` (one Chromium with a fresh
                     profile, one page) on that gateway; every request the browser makes is checked:
                     one to any host but 127.0.0.1 is aborted and fails the module
    Console          sign_in(key), sign_out(), use_language("en"), goto(path), screenshot(name),
                     expect_no_outside_requests()

Chromium is `/usr/bin/chromium` (Debian's package, installed by `make test`); Playwright never
downloads a browser here. Screenshots go to the test's temporary directory, and to `docs/console/` when
`FEDGATE_SCREENSHOTS=1` (`make screenshots`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.dev.localfed import Federation, register_everything, start_federation

CHROMIUM = Path(os.environ.get("FEDGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = "127.0.0.1"
DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
# A small county keeps the module fast; the browser tests are about the pages, not the statistics.
PERSONS = 600


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency (pip install -e '.[dev]')"
    )


def rule_analysts(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The analysts the departments' rules name: the module's `RULE_ANALYSTS`, else the signing analyst."""
    return tuple(getattr(request.module, "RULE_ANALYSTS", ("analyst",)))


@pytest.fixture(scope="module", name="console_fed")
def console_federation(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Federation]:
    _require_browser()
    federation = start_federation(tmp_path_factory.mktemp("console-fed"), persons=PERSONS, seed=11)
    try:
        register_everything(federation, analysts=rule_analysts(request))
        yield federation
    finally:
        federation.stop()


class Console:
    """One browser page on the gateway, with the loopback guard on every request."""

    def __init__(self, context: object, base_url: str, shots: Path) -> None:
        from playwright.sync_api import BrowserContext, Route

        assert isinstance(context, BrowserContext)
        self.context = context
        self.base_url = base_url.rstrip("/")
        self.shots = shots
        self.outside: list[str] = []

        def guard(route: Route) -> None:
            host = urlsplit(route.request.url).hostname
            if route.request.url.startswith(("data:", "blob:")) or host == LOOPBACK:
                route.continue_()
            else:
                self.outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        context.on("request", self._seen)
        self.page = context.pages[0] if context.pages else context.new_page()
        self.page.set_default_timeout(20_000)

    def _seen(self, request: object) -> None:
        url = str(getattr(request, "url", ""))
        if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname != LOOPBACK:
            self.outside.append(url)

    def goto(self, path: str) -> object:
        return self.page.goto(self.base_url + path)

    def sign_in(self, key: str) -> None:
        self.goto("/console/signin")
        self.page.fill("#api_key", key)
        self.page.click("#signin-form button[type=submit]")
        self.page.wait_for_url(self.base_url + "/console/")

    def sign_out(self) -> None:
        self.page.click("#signout")
        self.page.wait_for_url(self.base_url + "/console/signin")

    def use_language(self, lang: str) -> None:
        """Switch the console's language with the header's link, staying on the page."""
        self.page.click(f"header .langs a[href^='/console/lang/{lang}']")
        self.page.wait_for_load_state()

    def cookie(self, name: str) -> dict[str, object] | None:
        return next((dict(c) for c in self.context.cookies() if c.get("name") == name), None)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("FEDGATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
        return path

    def expect_no_outside_requests(self) -> None:
        assert self.outside == [], f"the browser tried to leave loopback: {self.outside}"


@pytest.fixture(scope="module", name="console")
def console_browser(console_fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    shots = tmp_path_factory.mktemp("screenshots")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            locale="zh-CN",
        )
        try:
            driver = Console(context, console_fed.gateway.url, shots)
            yield driver
            driver.expect_no_outside_requests()
        finally:
            context.close()


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "Console", "console_browser", "console_federation"]
