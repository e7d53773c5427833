"""The web console: server-rendered pages for every role, served by the gateway at /console.

    install_console(app, ctx)    mount the console at /console, `/` redirecting there, the offline API
                                 documentation at /docs and /redoc, and the browser security headers
    session_principal(ctx)       what the audit middleware calls to resolve a console cookie to its
                                 principal (so console requests are audited under their principal)

Every page acts through the same service functions, roles and audit events as the JSON API
(`gateway.queries`, `gateway.registry`, `gateway.auth`, `gateway.runner`, ...); the console never calls
the gateway over HTTP. Sessions are server-side (`sessions.py`), every state-changing request carries
the session's CSRF token (`deps.CsrfChecked`), the Content-Security-Policy allows no inline script or
style (`security.py`), and every visible string comes from `gateway.i18n` (areas `console`, and one
area per further page family). Page modules are listed in `PAGES`; each holds a `router` and adds its
menu entries with `render.nav`.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from gateway.api.errors import note_error, request_id_of, status_of
from gateway.auth import Principal
from gateway.console import docs
from gateway.console.deps import SignInRequired, page_lang
from gateway.console.render import render
from gateway.console.security import SecurityHeaders
from gateway.console.sessions import COOKIE, resolve
from gateway.context import GatewayContext
from gateway.errors import ErrorCode, GatewayError

__all__ = ["PAGES", "PREFIX", "STATIC_PREFIX", "install_console", "session_principal"]

PREFIX = "/console"
STATIC_PREFIX = f"{PREFIX}/static/"
PAGES = (
    "gateway.console.pages.signin",
    "gateway.console.pages.home",
    "gateway.console.pages.analyst",
    "gateway.console.pages.operator",
    "gateway.console.pages.runs",
    "gateway.console.pages.admin",
    "gateway.console.pages.audit",
)


class _Static(StaticFiles):
    """Vendored and own assets: cacheable for an hour (they change only with a release)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=3600"
        return response


def session_principal(ctx: GatewayContext) -> Any:
    """A resolver for `gateway.app.AuditMiddleware`: the principal of a console path's session cookie,
    with the session kept in the request's state for the page's dependencies."""

    def resolve_scope(scope: Scope) -> Principal | None:
        path = scope.get("path", "")
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None
        cookie = None
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # noqa: S112 - a malformed cookie header is no session
                    continue
                if COOKIE in jar:
                    cookie = jar[COOKIE].value
        session = resolve(ctx, cookie)
        if session is None:
            return None
        state = scope.setdefault("state", {})
        state["console_session"] = session
        state["principal"] = session.principal
        return session.principal

    return resolve_scope


def _console_app(app: FastAPI, ctx: GatewayContext) -> FastAPI:
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state.context = ctx
    console.state.gateway_metrics = lambda: getattr(app.state, "metrics", None)
    console.mount("/static", _Static(packages=[("gateway.console", "static")]), name="static")
    for module in PAGES:
        console.include_router(import_module(module).router)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        note_error(request, ErrorCode.UNAUTHENTICATED)
        return RedirectResponse(f"{PREFIX}/signin", status_code=303)

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        note_error(request, exc.code, type(exc).__name__)
        return _error_page(request, status_of(exc), exc.code.value, exc.message, exc.field)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        note_error(request, ErrorCode.INVALID_REQUEST)
        first: dict[str, Any] = dict(next(iter(exc.errors()), {}))
        field = ".".join(str(p) for p in first.get("loc", ()))
        return _error_page(request, 422, ErrorCode.INVALID_REQUEST.value, str(first.get("msg", "")), field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
        note_error(request, code)
        return _error_page(request, exc.status_code, code.value, "", None)

    console.add_exception_handler(SignInRequired, sign_in_required)
    console.add_exception_handler(GatewayError, domain_error)
    console.add_exception_handler(RequestValidationError, validation_error)
    console.add_exception_handler(StarletteHTTPException, http_error)
    return console


def _error_page(request: Request, status: int, code: str, message: str, field: str | None) -> Response:
    """The refusal as a page, or in the API's error shape for the pages' own fetches (Accept: JSON)."""
    session = getattr(request.state, "console_session", None)
    if "application/json" in request.headers.get("accept", ""):
        body = {
            "error": {"code": code, "message": message, "field": field, "request_id": request_id_of(request)}
        }
        return JSONResponse(body, status_code=status)
    return render(
        request,
        "error.html",
        page_lang(request),
        session,
        status=status,
        code=code,
        message=message,
        field=field,
    )


def install_console(app: FastAPI, ctx: GatewayContext) -> None:
    async def to_console(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    async def console_root(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    app.add_route("/", to_console, methods=["GET"], include_in_schema=False)
    app.add_route(PREFIX, console_root, methods=["GET"], include_in_schema=False)
    docs.install(app)
    app.mount(PREFIX, _console_app(app, ctx), name="console")
    app.add_middleware(SecurityHeaders)
