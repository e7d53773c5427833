"""The gateway's HTTP errors: one fixed set of codes and one JSON shape for every failure.

    Exception
     ├── gateway.errors.GatewayError    raised by domain modules, mapped to a status here (`STATUS`)
     └── ApiError(status, code, message, field)      raised by routes for what only HTTP knows

    What a client receives, whatever failed:

     GatewayError                      -> the status of its class, and its code
     ApiError                          -> its status and code
     RequestValidationError (FastAPI)  -> 422 invalid_request, naming the field path, never the value sent
     HTTPException (Starlette)         -> its status; 404 not_found for unknown routes, 405 invalid_request
     any other exception               -> 500 internal, no detail (the type and location are logged)

    {"error": {"code": "<ErrorCode>", "message": "...", "field": "body.epsilon" | null,
               "request_id": "<hex>"}}

Codes are a closed set so that clients (and analysts) can rely on them, and messages never carry
data-dependent numbers, raw identifiers, tokens or secrets. `install_request_id` gives every request an
id that appears in the error body, the `x-request-id` response header and every log line.
"""

from __future__ import annotations

import re
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors as domain
from gateway.errors import ErrorCode, GatewayError

__all__ = [
    "REQUEST_ID_HEADER",
    "STATUS",
    "ApiError",
    "ErrorBody",
    "ErrorCode",
    "ErrorResponse",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "install_request_id",
    "note_error",
    "status_of",
]

REQUEST_ID_HEADER = "x-request-id"
# An incoming request id is reused only if it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

log = structlog.get_logger(__name__)


# The one place where a domain error becomes an HTTP status (the most specific class wins).
STATUS: dict[type[GatewayError], int] = {
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Invalid: 422,
    domain.ApprovalInvalid: 422,
    domain.Conflict: 409,
    domain.NotApproved: 409,
    domain.BudgetRefused: 409,
    domain.RateLimited: 429,
    domain.AuditUnavailable: 503,
    domain.ConnectorUnavailable: 503,
    domain.ConnectorFailed: 502,
}


def status_of(error: GatewayError) -> int:
    """The HTTP status of a domain error: its class's, or its nearest base class's, else 500."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


class ErrorBody(BaseModel):
    """What went wrong: a fixed code, a public message, the offending field and the request id."""

    code: ErrorCode = Field(description="one of the fixed error codes")
    message: str = Field(description="what went wrong and how to fix it; never data, identifiers or secrets")
    field: str | None = Field(None, description="dotted path of the offending input, e.g. body.epsilon")
    request_id: str | None = Field(None, description="also in the x-request-id header and the logs")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody = Field(description="the error")


class ApiError(Exception):
    """A refusal with an HTTP status, one of the fixed codes, a public message and optionally the field."""

    def __init__(
        self,
        status: int,
        code: ErrorCode | str,
        message: str,
        field: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an error status must be 4xx or 5xx, got {status}")
        self.status = status
        # ErrorCode(...) raises for a code outside the fixed set, at the raise site rather than in a client.
        self.code = ErrorCode(code)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.code}: {message}")


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status: int,
    code: ErrorCode,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error shape, with the request id and, for 401, the scheme a client should use."""
    request_id = request_id_of(request)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, field=field, request_id=request_id))
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("www-authenticate", "Bearer")
    if request_id is not None:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=all_headers)


ERROR_MEANINGS: dict[int, str] = {
    401: "unauthenticated: no valid API key; send `Authorization: Bearer <key>` (fedgate users create)",
    403: "forbidden: your key's role or department may not do this",
    404: "not_found: nothing with that name or id (or not visible to you)",
    409: "conflict, not_approved or budget_exceeded: the state does not allow it yet (approvals missing, "
    "budget spent, already there); the message says which and what to do",
    413: "invalid_request: the body is larger than FEDGATE_MAX_BODY_BYTES",
    422: "invalid_request: a parameter or body field is missing or invalid; `field` names it",
    429: "rate_limited: too many requests without a valid key, or your concurrent runs are all in use",
    502: "connector_error: a connector answered with something the gateway refuses; nothing was charged",
    503: "audit_unavailable or connector_unavailable: the audit log cannot be written (nothing was done) "
    "or a connector cannot be reached",
}
"""What each error status means on this API; every one has the `ErrorResponse` body."""

EVERY_REQUEST = (401, 429, 503)
"""Statuses any request with a key can get before its route runs: the key refused, the flood gate for
requests without a valid key, and the fail-closed audit log. A public route can only get the last."""


def error_responses(*statuses: int, authenticated: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for one route: the statuses it can return besides the ones every request can
    (401, 429 and 503; a public route only 503), each with its meaning and the one `ErrorResponse` body."""
    every = EVERY_REQUEST if authenticated else (503,)
    return {
        status: {"model": ErrorResponse, "description": ERROR_MEANINGS[status]}
        for status in sorted({*statuses, *every})
    }


_CODE_FOR_STATUS = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    429: ErrorCode.RATE_LIMITED,
}

_MESSAGE_FOR_STATUS = {404: "no such resource", 405: "method not allowed for this path"}


def _code_for_status(status: int) -> ErrorCode:
    if status in _CODE_FOR_STATUS:
        return _CODE_FOR_STATUS[status]
    return ErrorCode.INTERNAL if status >= 500 else ErrorCode.INVALID_REQUEST


def _note_error(request: Request, code: ErrorCode, error_type: str | None = None) -> None:
    # The audit middleware records the code (and the domain error's type) of every refused request
    # beside its status.
    request.state.error_code = code.value
    if error_type is not None:
        request.state.error_type = error_type


def note_error(request: Request, code: ErrorCode, error_type: str | None = None) -> None:
    """Tell the audit middleware the code (and domain error type) of a refusal another front end (the
    console's HTML pages) answered itself."""
    _note_error(request, code, error_type)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    _note_error(request, exc.code)
    return error_response(request, exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    _note_error(request, exc.code, type(exc).__name__)
    return error_response(request, status_of(exc), exc.code, exc.message, exc.field)


def _field_path(location: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in location)


def _validation_message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    value = error.get("input")
    # A validator may quote what it was given; the response must not, so such a message is replaced.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 3 and text in message:
            return f"invalid value ({error.get('type', 'value_error')})"
    return message


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(request, 422, ErrorCode.INVALID_REQUEST, "invalid request")
    _note_error(request, ErrorCode.INVALID_REQUEST)
    first = errors[0]
    field = _field_path(first.get("loc", ()))
    message = f"{field}: {_validation_message(first)}" if field else _validation_message(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(request, 422, ErrorCode.INVALID_REQUEST, message, field or None)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _code_for_status(exc.status_code)
    _note_error(request, code)
    if exc.status_code in _MESSAGE_FOR_STATUS:
        # Starlette's own "Not Found" / "Method Not Allowed"; a fixed wording keeps bodies uniform.
        message = _MESSAGE_FOR_STATUS[exc.status_code]
    elif code is ErrorCode.INTERNAL or not isinstance(exc.detail, str):
        message = code.value.replace("_", " ")
    else:
        message = exc.detail
    return error_response(request, exc.status_code, code, message, headers=exc.headers)


UNHANDLED_MESSAGE = "internal error; quote the request id"


def error_type_of(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def log_unhandled(exc: BaseException, *, method: str | None, request_id: str | None) -> None:
    """Log an exception no handler answered: its type and where it was raised, nothing more (an
    exception's message or locals may hold values, tokens or counts, that no log line may carry)."""
    frames = traceback.extract_tb(exc.__traceback__)
    log.error(
        "unhandled error",
        error_type=error_type_of(exc),
        where=[f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames[-8:]],
        method=method,
        request_id=request_id,
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log_unhandled(exc, method=request.method, request_id=request_id_of(request))
    return error_response(request, 500, ErrorCode.INTERNAL, UNHANDLED_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure of `app` answer with `ErrorResponse` and a code from `ErrorCode`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(GatewayError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)


class RequestIdMiddleware:
    """Gives each HTTP request an id: `request.state.request_id`, the response header and log context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", ()):
            if name == REQUEST_ID_HEADER.encode("ascii"):
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode("ascii"), request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        # The request runs in its own task; clearing first means nothing bound by an earlier request on
        # this context (principal, role) can appear in this request's log lines.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()


def install_request_id(app: FastAPI) -> None:
    """Add `RequestIdMiddleware` to `app`.

    Call it after every other `add_middleware`: Starlette runs the last-added middleware outermost, and
    the id must be bound before the others (metrics, audit) run.
    """
    app.add_middleware(RequestIdMiddleware)
