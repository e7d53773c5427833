"""What one request may cost the gateway, refused before any work is done.

    install_body_limit(app, max_bytes)   413 for a body above `FEDGATE_MAX_BODY_BYTES`, by Content-Length
                                         and while streaming, before the route authenticates or parses
    RunSlots                             at most `FEDGATE_MAX_CONCURRENT_RUNS_PER_ANALYST` runs (queries,
                                         indicators, packs) of one analyst at a time, `RateLimited` past
                                         it (the routes take a slot through `gateway.api.limits.RunSlot`)

The cost of a query's release (cells x bins) is public policy checked by the planner
(`aggregation.limits`), and the bounds of every number a route accepts live in `gateway.api.schemas`.
"""

from __future__ import annotations

import json
import threading

from fastapi import FastAPI
from starlette.types import Scope

from connectors.body_limit import BodySizeLimit
from gateway.errors import ErrorCode, RateLimited

__all__ = ["RunSlots", "install_body_limit"]


def _gateway_413(scope: Scope, limit: int) -> bytes:
    """The gateway's one error shape, with the request id the outer middleware gave this request."""
    request_id = scope.get("state", {}).get("request_id")
    error = {
        "code": ErrorCode.INVALID_REQUEST.value,
        "message": f"the request body exceeds the gateway's limit of {limit} bytes; send a smaller body",
        "field": "body",
        "request_id": request_id,
    }
    return json.dumps({"error": error}).encode()


def install_body_limit(app: FastAPI, max_bytes: int) -> None:
    """Add the body limit to `app`.

    Call it just before adding the audit middleware: Starlette runs later-added middleware further out,
    so the audit middleware still records the 413 (with the caller's identity from the headers), and the
    limit runs before routing, authentication dependencies and body parsing.
    """
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes, refusal=_gateway_413)


class RunSlots:
    """Counts the runs each analyst has in progress in this process; refuses one past the limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def acquire(self, analyst: str, limit: int) -> None:
        with self._lock:
            running = self._running.get(analyst, 0)
            if running >= limit:
                raise RateLimited(
                    f"analyst {analyst} already has {running} runs in progress and the limit is {limit} "
                    "(FEDGATE_MAX_CONCURRENT_RUNS_PER_ANALYST); wait for one to finish"
                )
            self._running[analyst] = running + 1

    def release(self, analyst: str) -> None:
        with self._lock:
            left = self._running.get(analyst, 0) - 1
            if left > 0:
                self._running[analyst] = left
            else:
                self._running.pop(analyst, None)

    def running(self, analyst: str) -> int:
        with self._lock:
            return self._running.get(analyst, 0)
