"""The security headers of every page the gateway serves to a browser.

    CONSOLE_CSP   the console: scripts, styles, images and fetches from the gateway itself only, no inline
                  script or style, no framing, forms post only to the gateway
    DOCS_CSP      Swagger UI and ReDoc: the same, except that both render with inline styles (their own
                  CSS-in-JS) and ReDoc searches in a worker it starts from a blob

`SecurityHeaders` adds them to the console's and the documentation's responses (and the redirect at `/`),
and to nothing else: the JSON API keeps its own headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONSOLE_CSP", "DOCS_CSP", "SecurityHeaders"]

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; worker-src blob:; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

_COMMON = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
DOCS_PATHS = ("/docs", "/redoc")


def _csp_for(path: str) -> bytes | None:
    if path == "/" or path == "/console" or path.startswith("/console/"):
        return CONSOLE_CSP.encode()
    if path in DOCS_PATHS or path.startswith("/docs/"):
        return DOCS_CSP.encode()
    return None


class SecurityHeaders:
    """Adds CSP, framing, referrer and sniffing headers to browser pages; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        csp = _csp_for(scope.get("path", "")) if scope["type"] == "http" else None
        if csp is None:
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"content-security-policy"]
                headers.append((b"content-security-policy", csp))
                headers.extend(_COMMON)
                if not static and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
