"""The gateway's FastAPI application and its start-up.

    build_context(settings)  database (migrated), gateway key, ledger, audit trail, recovery of runs
                             a dead process left (`gateway.lifecycle`) and of its jobs (`gateway.jobs`)
    create_app(context)      routes, one error shape, request ids, metrics, the audit middleware

Every HTTP request, allowed or refused, is appended to the audit trail before its response starts; if
that append fails the client gets 503 instead (the gateway fails closed). An exception that no handler
answers is audited too (status 500 and the exception's type) before its 500 leaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.checkpoint import Checkpointer, CheckpointPolicy, NoteSigner, load_signer
from audit.store import AuditLog
from connectors.protocol import load_private_key, private_key_pem
from gateway import db, monitoring
from gateway.api import analysts as analyst_routes
from gateway.api import audit as audit_routes
from gateway.api import indicators as indicator_routes
from gateway.api import jobs as job_routes
from gateway.api import key_groups as key_group_routes
from gateway.api import monitoring as monitoring_routes
from gateway.api import queries as query_routes
from gateway.api import registry as registry_routes
from gateway.api import runs as run_routes
from gateway.api import schedules as schedule_routes
from gateway.api.errors import (
    REQUEST_ID_HEADER,
    UNHANDLED_MESSAGE,
    error_type_of,
    install_error_handlers,
    install_request_id,
    log_unhandled,
)
from gateway.audit_trail import AuditTrail
from gateway.auth import Principal, authenticate
from gateway.console import STATIC_PREFIX, install_console, session_principal
from gateway.context import GatewayContext
from gateway.errors import AuditUnavailable, ErrorCode, GatewayError
from gateway.events import HttpRequest, UnauthenticatedFlood
from gateway.flood import FloodGate
from gateway.jobs import recover_interrupted_jobs, resume_queued
from gateway.lifecycle import recover_interrupted_runs
from gateway.limits import install_body_limit
from gateway.observability import _route_template, health_router, install_metrics, metrics_router
from gateway.schedules import Scheduler
from gateway.settings import GatewaySettings, SettingsError
from privacy.ledger import Ledger

log = structlog.get_logger("fedgate.gateway")


def _key_file(
    settings: GatewaySettings, configured: Path | None, name: str, make: Callable[[], bytes]
) -> Path:
    """A configured key file; in development only, one generated once under the state directory."""
    if configured is not None:
        return Path(configured)
    if settings.mode == "production":
        raise SettingsError(f"production mode needs an explicit key file for the {name} (FEDGATE_* setting)")
    path = settings.state_dir / f"{name.replace(' ', '-')}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(make())
        log.warning("gateway.generated_development_key", key=name, path=str(path))
    return path


def load_gateway_key(settings: GatewaySettings) -> Ed25519PrivateKey:
    """The key that signs requests to connectors."""
    path = _key_file(
        settings, settings.signing_key_file, "gateway", lambda: private_key_pem(Ed25519PrivateKey.generate())
    )
    return load_private_key(path.read_bytes())


def load_audit_signer(settings: GatewaySettings) -> NoteSigner:
    """The audit key that signs checkpoints."""
    path = _key_file(
        settings,
        settings.audit_key_file,
        "audit",
        lambda: NoteSigner.generate(settings.audit_origin).skey().encode(),
    )
    return load_signer(path)


def check_ledger_against_audit(ctx: GatewayContext) -> None:
    """Refuse to start if the ledger shows less spending than the audit log records.

    Every `query.released` entry names a query whose charge the ledger must still count (reserved,
    charged or spent): a ledger restored from an older backup would lack it and hand that budget back.
    """
    missing = 0
    after = 0
    while True:
        page = ctx.audit.log.filter(action="query.released", after_seq=after, limit=1000)
        if not page:
            break
        for e in page:
            entry = ctx.ledger.entry(str(e.event.get("query_id")))
            missing += entry is None or entry.state == "refunded"
        after = page[-1].seq
    if missing:
        raise SettingsError(
            f"the budget ledger shows less spending than the audit log records: {missing} released queries "
            "have no charge in the ledger. A restored backup must not hand budget back; restore the ledger "
            "that matches the audit log."
        )


def build_context(settings: GatewaySettings, *, engine: sa.Engine | None = None) -> GatewayContext:
    if settings.mode == "production":
        settings.check_production()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or db.make_engine(settings.database_url_resolved())
    db.migrate(engine)
    ledger = Ledger(
        engine,
        year_cap=settings.data_year_epsilon,
        default_analyst_quota=settings.default_analyst_quota,
    )
    ctx = GatewayContext(
        settings=settings,
        engine=engine,
        gateway_key=load_gateway_key(settings),
        ledger=ledger,
        audit=AuditTrail(AuditLog(engine)),
    )
    ctx.checkpointer = Checkpointer(
        ctx.audit.log,
        load_audit_signer(settings),
        origin=settings.audit_origin,
        policy=CheckpointPolicy(
            every_entries=settings.checkpoint_every_entries, every_seconds=settings.checkpoint_every_seconds
        ),
    )
    check_ledger_against_audit(ctx)
    monitoring.load_settings_file(ctx)
    ctx.tls = connector_tls(settings)
    recover_interrupted_runs(ctx.engine, ctx.ledger, ctx.audit)
    recover_interrupted_jobs(ctx)
    return ctx


def connector_tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The TLS context for calls to connectors: trust the federation CA, present the gateway's certificate."""
    if settings.tls_client_ca_file is None and settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.tls_client_ca_file) if settings.tls_client_ca_file else None
    )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    return context


async def _send_error(
    send: Send, status: int, code: str, message: str, request_id: str | None = None
) -> None:
    body = json.dumps(
        {"error": {"code": code, "message": message, "field": None, "request_id": request_id}}
    ).encode()
    headers = [(b"content-type", b"application/json")]
    if request_id is not None:
        headers.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AuditMiddleware:
    """Append one audit entry per HTTP request before its response starts; 503 if that fails.

    It wraps the routes and their exception handlers, so an exception that none of them answers is
    caught here, audited as a 500 with its type, and answered with the one error shape.
    """

    def __init__(
        self,
        app: ASGIApp,
        context: GatewayContext,
        flood: FloodGate | None = None,
        session_principal: Callable[[Scope], Principal | None] | None = None,
        static_prefix: str | None = None,
    ) -> None:
        self.app = app
        self.ctx = context
        self.flood = flood or FloodGate()
        self.session_principal = session_principal
        # The console's packaged assets (CSS, scripts, the vendored documentation bundles): the same
        # files for everyone, about no one, so neither audited one by one nor counted against a source.
        self.static_prefix = static_prefix

    def _principal(self, scope: Scope) -> tuple[str | None, str | None]:
        """Authenticate once per request; the route's dependency reuses the result (scope state).

        An API key in the Authorization header, else (for the console's paths only) the signed-in
        session its cookie names (`session_principal`), so console requests are audited under their
        principal and are not counted as unauthenticated."""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                try:
                    p = authenticate(self.ctx.engine, value[7:].decode("latin-1").strip())
                except GatewayError:
                    return None, None
                scope.setdefault("state", {})["principal"] = p
                return p.name, p.role.value
        if self.session_principal is not None:
            session_principal = self.session_principal(scope)
            if session_principal is not None:
                return session_principal.name, session_principal.role.value
        return None, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.static_prefix is not None and scope.get("path", "").startswith(self.static_prefix)
        ):
            await self.app(scope, receive, send)
            return
        from fastapi.concurrency import run_in_threadpool

        started = time.perf_counter()
        sent_503 = False
        response_started = False
        client = (scope.get("client") or ("-", 0))[0]
        principal, role = await run_in_threadpool(self._principal, scope)
        if principal is None and scope.get("path") != "/healthz":
            admitted, summary = self.flood.admit(client)
            if summary is not None:
                # A summary never blocks; the next audited request fails closed if the log is down.
                flood = UnauthenticatedFlood(actor="-", **cast(dict[str, Any], summary))
                with contextlib.suppress(AuditUnavailable):
                    await run_in_threadpool(self.ctx.audit.record, flood)
            if not admitted:
                await _send_error(send, 429, "rate_limited", "too many requests without a valid API key")
                return

        def entry(status: int, error_type: str | None = None) -> HttpRequest:
            state = scope.get("state", {})
            error = state.get("error_code") if status >= 400 else None
            return HttpRequest(
                actor=principal or "-",
                method=scope["method"],
                path=_route_template(scope),
                status=status,
                principal=principal,
                role=role,
                request_id=state.get("request_id"),
                client=client,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
                error=error if error is not None else ErrorCode.INTERNAL.value if status >= 500 else None,
                error_type=error_type or (state.get("error_type") if status >= 400 else None),
            )

        async def audited_send(message: Message) -> None:
            nonlocal sent_503, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                try:
                    await run_in_threadpool(self.ctx.audit.record, entry(status))
                except AuditUnavailable:
                    if scope.get("state", {}).get("error_code") == ErrorCode.AUDIT_UNAVAILABLE.value:
                        # The route already says what the outage left undone: keep its answer.
                        await send(message)
                        return
                    sent_503 = True
                    # The request's own change, if it made one, committed with its own entry; only the
                    # record of this request could not be written.
                    await _send_error(
                        send,
                        503,
                        "audit_unavailable",
                        "the audit log cannot be written; this request's outcome could not be recorded",
                        scope.get("state", {}).get("request_id"),
                    )
                    return
            elif sent_503:
                return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception as exc:
            request_id = scope.get("state", {}).get("request_id")
            log_unhandled(exc, method=scope.get("method"), request_id=request_id)
            if response_started:
                raise
            try:
                await run_in_threadpool(self.ctx.audit.record, entry(500, error_type_of(exc)))
            except AuditUnavailable:
                await _send_error(
                    send, 503, "audit_unavailable", "the audit log cannot be written", request_id
                )
                return
            await _send_error(send, 500, "internal", UNHANDLED_MESSAGE, request_id)


def create_app(context: GatewayContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context.checkpointer is not None:
            context.checkpointer.start()
        resume_queued(context)
        scheduler = Scheduler(context) if context.settings.schedules_enabled else None
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()
        context.stop_jobs()
        if context.checkpointer is not None:
            context.checkpointer.stop()
        context.federation().close()

    app = FastAPI(
        lifespan=lifespan,
        # The documentation pages are served by the console from vendored assets (`gateway.console.docs`).
        docs_url=None,
        redoc_url=None,
        title="fedgate gateway",
        version="1",
        description=(
            "Privacy-preserving data federation: department connectors answer only signed, approved, "
            "tokenised requests; analysts receive differentially private aggregates with 95% intervals; "
            "every request is audited."
        ),
    )
    app.state.context = context
    app.state.engine = context.engine
    install_body_limit(app, context.settings.max_body_bytes)
    app.add_middleware(
        AuditMiddleware,
        context=context,
        session_principal=session_principal(context),
        static_prefix=STATIC_PREFIX,
    )
    install_error_handlers(app)
    if context.settings.metrics_enabled:
        install_metrics(app)
    install_request_id(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(registry_routes.router)
    app.include_router(key_group_routes.router)
    app.include_router(query_routes.router)
    app.include_router(analyst_routes.router)
    app.include_router(run_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(indicator_routes.router)
    app.include_router(job_routes.router)
    app.include_router(schedule_routes.router)
    app.include_router(monitoring_routes.router)
    install_console(app, context)
    return app
