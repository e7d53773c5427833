"""A limit on request bodies that holds before anything reads them: a pure ASGI middleware.

Both services use it (the connector here, the gateway through `gateway.limits`), each with its own error
shape. A request is refused with 413 when its `Content-Length` is above the limit, before the application
sees it, and when a body without a (truthful) length grows past the limit while it streams in: the
application's `receive` then fails with `BodyTooLarge`, and whatever response the application tries to
send instead is replaced by the 413. Nothing beyond the limit is ever buffered.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "BodyTooLarge", "RefusalBody"]

RefusalBody = Callable[[Scope, int], bytes]
"""Builds the JSON body of the 413 for a request scope and the limit in bytes."""


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit.

    An `HTTPException` so that a framework which wraps body-reading errors (FastAPI answers 400 for
    those) lets it through unchanged; the middleware answers the 413 itself either way.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(413, f"the request body exceeds {limit} bytes")


class BodySizeLimit:
    """Refuse request bodies above `max_bytes` with 413, by Content-Length and while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, refusal: RefusalBody) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.refusal = refusal

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = self.refusal(scope, self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The application answered (its own 400, 413 or 500) after its read failed: the one 413
                # replaces that answer.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                started = True
                await self._refuse(scope, send)


def _declared_length(scope: Scope) -> int | None:
    """The largest Content-Length the request declares; None without one (the streaming check holds)."""
    lengths = [int(v) for k, v in scope.get("headers", ()) if k == b"content-length" and v.isdigit()]
    return max(lengths) if lengths else None
