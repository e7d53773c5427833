"""A loopback static site and one Chromium page for the console's in-page cryptography tests.

The static site serves the console's static directory alone (no gateway, no federation), so the JS
modules' known answers are checked in seconds; the browser is the console harness's (`console_fixture`:
the same Chromium and flags). Requests to anything but 127.0.0.1 fail the test.
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from console_fixture import CHROMIUM, CHROMIUM_ARGS

STATIC = Path(__file__).resolve().parents[1] / "gateway" / "console" / "static"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """`STATIC` over HTTP on an ephemeral loopback port (a secure context, so WebCrypto is there)."""

    def __init__(self) -> None:
        handler = functools.partial(_Quiet, directory=str(STATIC))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StaticSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def browser_page() -> Iterator[Any]:
    """One page in a fresh Chromium profile; any request off loopback fails the test."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="fedgate-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        outside: list[str] = []

        def guard(route: Any) -> None:
            url = route.request.url
            if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname != "127.0.0.1":
                outside.append(url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", guard)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
        assert not outside, f"requests left loopback: {outside}"
