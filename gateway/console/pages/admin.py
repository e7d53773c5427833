"""The department admin's pages: the approvals inbox, signing in the page, the rules, the connectors.

    GET  /console/admin/approvals                 every query reading the department's data, waiting first
    GET  /console/admin/approvals/{id}            what it takes (datasets, fields, household mapping,
                                                  periods, epsilon, expiry) and the approval to sign
    POST /console/admin/approvals/{id}/approve    {digest, signature, key_fingerprint}: a signature made in
                                                  the browser with the admin's own key file
    POST /console/admin/approvals/{id}/reject     form: the reason
    GET  /console/admin/rules                     the department's rules: active, expired, revoked
    GET  /console/admin/connectors                its connectors, their health and where the quality
                                                  report is read

The approval key never reaches the gateway: the page gets the draft approval's exact signing bytes, the
browser signs them (static/js/approval-sign.js) and posts only the signature, which
`gateway.inbox.approve_signed` stores through `queries.record_approval` like an approval from the API
(verified under the department's registered key, audited as `query.approved`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from connectors.protocol import fingerprint
from gateway import inbox
from gateway.auth import Role
from gateway.console.deps import CsrfChecked, DepartmentAdminSession, PageLang
from gateway.console.render import nav, render
from gateway.context import GatewayContext, get_context
from gateway.department_rules import department_rules
from gateway.queries import record_rejection
from gateway.registry import ConnectorRecord, is_callable, list_connectors

router = APIRouter(prefix="/admin")

nav(Role.DEPARTMENT_ADMIN, "/console/admin/approvals", "console_admin.nav_inbox")
nav(Role.DEPARTMENT_ADMIN, "/console/admin/rules", "console_admin.nav_rules")
nav(Role.DEPARTMENT_ADMIN, "/console/admin/connectors", "console_admin.nav_connectors")

HEALTH_TIMEOUT_SECONDS = 3.0
MAX_REASON = 1_000


class SignedIn(BaseModel):
    """The page's signature over the draft approval whose signing bytes have SHA-256 `digest`."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(min_length=1, max_length=200)
    key_fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")


def _connectors(ctx: GatewayContext, department: str) -> list[ConnectorRecord]:
    return [c for c in list_connectors(ctx.engine) if c.department == department]


def _approval_fingerprint(ctx: GatewayContext, department: str) -> str:
    """The fingerprint of the department's registered approval key, for the page to compare the picked
    file with before it posts; empty when the department has none or several (the gateway refuses then)."""
    keys = {c.approval_key for c in _connectors(ctx, department) if c.enabled}
    return fingerprint(keys.pop()) if len(keys) == 1 else ""


@router.get("/approvals")
def approvals(request: Request, session: DepartmentAdminSession, lang: PageLang) -> Response:
    items = inbox.inbox(get_context(request).engine, session.principal)
    return render(request, "admin_inbox.html", lang, session, items=items)


@router.get("/approvals/{query_id}")
def approval(query_id: str, request: Request, session: DepartmentAdminSession, lang: PageLang) -> Response:
    ctx = get_context(request)
    department = session.principal.department or ""
    item = inbox.inbox_item(ctx.engine, department, query_id)
    return render(
        request,
        "admin_approval.html",
        lang,
        session,
        item=item,
        registered_fingerprint=_approval_fingerprint(ctx, department),
        gateway_url=str(request.base_url).rstrip("/"),
    )


@router.post("/approvals/{query_id}/approve")
def approve(
    query_id: str, body: SignedIn, request: Request, session: DepartmentAdminSession, _csrf: CsrfChecked
) -> Response:
    ctx = get_context(request)
    record = inbox.approve_signed(
        ctx.audit,
        query_id,
        session.principal,
        digest=body.digest,
        signature=body.signature,
        key_fingerprint=body.key_fingerprint,
    )
    return JSONResponse({"query_id": record.id, "state": record.state.value})


@router.post("/approvals/{query_id}/reject")
def reject(
    query_id: str,
    request: Request,
    session: DepartmentAdminSession,
    _csrf: CsrfChecked,
    reason: Annotated[str, Form(min_length=1, max_length=MAX_REASON)],
) -> Response:
    ctx = get_context(request)
    inbox.inbox_item(ctx.engine, session.principal.department or "", query_id)  # 404 outside the department
    record_rejection(ctx.audit, query_id, reason, session.principal)
    return RedirectResponse(f"/console/admin/approvals/{query_id}", status_code=303)


@router.get("/rules")
def rules(request: Request, session: DepartmentAdminSession, lang: PageLang) -> Response:
    found = department_rules(get_context(request).engine, session.principal.department or "")
    return render(request, "admin_rules.html", lang, session, rules=found, now=dt.datetime.now(dt.UTC))


@router.get("/connectors")
def connectors(request: Request, session: DepartmentAdminSession, lang: PageLang) -> Response:
    ctx = get_context(request)
    rows = []
    for record in _connectors(ctx, session.principal.department or ""):
        health = None
        production = ctx.settings.mode == "production"
        if record.enabled and is_callable(ctx.engine, record.endpoint, production=production):
            link = ctx.federation().link(record.name, record.endpoint, record.signing_key)
            health = link.health(timeout=HEALTH_TIMEOUT_SECONDS)
        rows.append((record, health))
    return render(request, "admin_connectors.html", lang, session, rows=rows)
