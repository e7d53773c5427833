"""Health check and Prometheus metrics of the gateway.

`/healthz` is public and says only that the process answers. `/metrics` is for the operator role and
carries request counts and latencies by method, route template and status: nothing that depends on the
data. In particular there is no process collector (memory use grows with the size of an extract) and no
raw paths (a path can hold a query id), only route templates.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.deps import require_roles
from gateway.api.errors import error_responses
from gateway.api.schemas import HealthResponse
from gateway.auth import Principal, Role
from gateway.errors import NotFound

__all__ = ["GatewayMetrics", "health_router", "install_metrics", "metrics_router"]

# Anything else is counted as "other", so a client cannot mint label values (and time series) at will.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
# Queries wait on connectors for up to a minute; the upper buckets keep those distinguishable.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """The metrics of one app, on a private registry (never the process-global default one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedgate_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedgate_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    """The matched route's path template, include prefixes and all; an unknown path has none.

    The router writes the match into the shared scope. For a route of an included router, newer FastAPI
    puts the original route (without the include prefix) in scope["route"] and the full template in its
    own route context, so that is consulted first.
    """
    fastapi_scope = scope.get("fastapi")
    effective = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    # Inside a mounted app (the console at /console) the route is the mounted app's; its mount path is
    # what the mount added to root_path.
    root_path = str(scope.get("root_path", ""))
    mount = root_path[len(str(scope.get("app_root_path", root_path))) :]
    for candidate in (effective, scope.get("route")):
        template = getattr(candidate, "path_format", None)
        if isinstance(template, str) and template:
            return mount + template
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP request, after routing, by its route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.observe(
                scope["method"], _route_template(scope), status, time.perf_counter() - started
            )


def install_metrics(app: FastAPI) -> GatewayMetrics:
    """Count and time `app`'s requests; `/metrics` (from `metrics_router`) serves what is collected."""
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return metrics


health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", response_model=HealthResponse, responses=error_responses(authenticated=False))
async def healthz() -> HealthResponse:
    """Liveness: the process answers. Public, and says nothing else."""
    return HealthResponse()


metrics_router = APIRouter(tags=["operations"])

Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(403, 404)},
)
async def metrics(request: Request, operator: Operator) -> Response:
    """Prometheus metrics, for the operator role only."""
    collected = getattr(request.app.state, "metrics", None)
    if not isinstance(collected, GatewayMetrics):
        raise NotFound("metrics are disabled (FEDGATE_METRICS_ENABLED=false)")
    return Response(collected.render(), media_type=CONTENT_TYPE_LATEST)
