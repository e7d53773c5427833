"""The department admin's and auditor's console routes that change something: audited first, like the API.

The console's approve and reject call the same services as `POST /v1/queries/{id}/approvals` and
`/rejections` (`gateway.inbox.approve_signed` -> `queries.record_approval`, `queries.record_rejection`),
so their entries are written in the same transaction as the change. With the audit store refusing writes
each of these routes refuses and the database is exactly as it was; with the log writable they change
things, each with its entry. The list of routes is checked against the console app, so a new state-changing
page route of the admin's or the auditor's must be added here.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import sqlalchemy as sa
import test_gateway_audit_first as base
from fastapi.testclient import TestClient
from starlette.routing import Mount

from aggregation.query import QuerySpec
from connectors.protocol import ApprovedDataset, fingerprint, load_private_key
from gateway.api.deps import _api_routes
from gateway.approval_draft import draft_approval, signing_digest

# The in-process federation of the API's audit-first test, reused as it is.
REFUSE_AUDIT, Fed, _query, _snapshot = base.REFUSE_AUDIT, base.Fed, base._query, base._snapshot
county, fed = base.county, base.fed

OURS = ("/admin/", "/audit/")


def _console_routes(app: Any) -> set[tuple[str, str]]:
    console = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == "/console")
    return {
        (method, path)
        for path, methods, _ in _api_routes(console)
        for method in methods
        if method in ("POST", "PUT", "PATCH", "DELETE") and path.startswith(OURS)
    }


def _signed_in(fed: Fed, who: str) -> tuple[TestClient, str]:
    """A browser-like client with a console session of `who`, and that session's CSRF token."""
    client = TestClient(fed.http.app, raise_server_exceptions=False)
    page = client.get("/console/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    done = client.post("/console/signin", data={"api_key": fed.keys[who], "csrf_token": token.group(1)})
    assert done.status_code == 200 and done.url.path == "/console/"
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', done.text)
    assert csrf is not None
    return client, csrf.group(1)


def _page_signature(fed: Fed, view: dict[str, Any], department: str) -> dict[str, str]:
    """What the approvals page posts: the draft's digest and the signature over its bytes."""
    scopes = [ApprovedDataset.model_validate(d) for d in view["required_approvals"][department]]
    draft = draft_approval(QuerySpec.model_validate(view["spec"]), department, scopes)
    key = load_private_key(fed.approval_key(department))
    return {
        "digest": signing_digest(draft),
        "signature": base64.b64encode(key.sign(draft.signing_bytes())).decode(),
        "key_fingerprint": fingerprint(key.public_key()),
    }


def test_console_changes_are_refused_with_the_audit_log_down_and_audited_once_it_is_up(
    fed: Fed,
) -> None:
    assert _console_routes(fed.http.app) == {
        ("POST", "/admin/approvals/{query_id}/approve"),
        ("POST", "/admin/approvals/{query_id}/reject"),
        ("POST", "/audit/reconcile"),
    }, "a state-changing admin or auditor page route is missing from this test"
    waiting = fed.http.post(
        "/v1/queries",
        json=_query("Bands by village, waiting for the console").model_dump(mode="json"),
        headers=fed.as_("other-analyst"),
    ).json()
    qid = waiting["id"]
    tax, tax_csrf = _signed_in(fed, "tax")
    civil, civil_csrf = _signed_in(fed, "civil")
    auditor, auditor_csrf = _signed_in(fed, "auditor")
    signed = _page_signature(fed, waiting, "tax")

    def approve() -> Any:
        return tax.post(
            f"/console/admin/approvals/{qid}/approve",
            json=signed,
            headers={"x-csrf-token": tax_csrf, "accept": "application/json"},
        )

    def reject() -> Any:
        return civil.post(
            f"/console/admin/approvals/{qid}/reject",
            data={"reason": "not for this purpose", "csrf_token": civil_csrf},
            follow_redirects=False,
        )

    def reconcile() -> Any:
        return auditor.post(
            "/console/audit/reconcile",
            data={"csrf_token": auditor_csrf},
            files={"connector_log": ("tax.jsonl", b'{"kind":"header","format":"fedgate-connector-log/1"}\n')},
        )

    assert fed.ctx.checkpointer is not None
    fed.ctx.checkpointer.checkpoint()
    before = _snapshot(fed.ctx.engine)
    with fed.ctx.engine.begin() as conn:
        conn.execute(sa.text(REFUSE_AUDIT))
    for call in (approve, reject, reconcile):
        assert call().status_code == 503, call.__name__
    with fed.ctx.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_audit"))
    after = _snapshot(fed.ctx.engine)
    assert {t: rows for t, rows in after.items() if rows != before[t]} == {}

    done = approve()
    assert done.status_code == 200, done.text
    assert done.json() == {"query_id": qid, "state": "submitted"}  # the other departments still decide
    approved = [e for e in fed.events("query.approved") if e["query_id"] == qid]
    assert [(e["department"], e["approval_signature"]) for e in approved] == [("tax", signed["signature"])]
    assert reject().status_code == 303
    assert [e["department"] for e in fed.events("query.rejected") if e["query_id"] == qid] == ["civil"]
    assert fed.http.get(f"/v1/queries/{qid}", headers=fed.as_("tax")).json()["state"] == "rejected"
    # Decided: a second approval from the page is a conflict and stores nothing more.
    assert approve().status_code == 409
    assert len([e for e in fed.events("query.approved") if e["query_id"] == qid]) == 1


def test_console_admin_pages_are_the_department_admins_own(fed: Fed) -> None:
    waiting = fed.http.post(
        "/v1/queries",
        json=_query("Bands by village, for the role checks").model_dump(mode="json"),
        headers=fed.as_("other-analyst"),
    ).json()
    analyst, analyst_csrf = _signed_in(fed, "analyst")
    auditor, _ = _signed_in(fed, "auditor")
    tax, _ = _signed_in(fed, "tax")
    # Other roles get 403 on the admin's pages and the auditor's, nothing is stored.
    assert analyst.get("/console/admin/approvals").status_code == 403
    assert tax.get("/console/audit/log").status_code == 403
    assert auditor.get("/console/admin/rules").status_code == 403
    refused = analyst.post(
        f"/console/admin/approvals/{waiting['id']}/approve",
        json=_page_signature(fed, waiting, "tax"),
        headers={"x-csrf-token": analyst_csrf, "accept": "application/json"},
    )
    assert refused.status_code == 403
    assert fed.http.get(f"/v1/queries/{waiting['id']}", headers=fed.as_("tax")).json()["decisions"] == []
    # A query that reads nothing of a department is not found in its inbox (whether it exists is not
    # for that department to learn); an unknown entry or a bad time filter is a 4xx page, never a 500.
    narrow = fed.http.post(
        "/v1/queries",
        json=_query(
            "Households by village only",
            measure=None,
            group_by=("register.persons.village",),
            statistics=[{"kind": "count"}],
        ).model_dump(mode="json"),
        headers=fed.as_("other-analyst"),
    ).json()
    assert tax.get(f"/console/admin/approvals/{narrow['id']}").status_code == 404
    assert auditor.get("/console/audit/entries/999999").status_code == 404
    assert auditor.get("/console/audit/log?since=yesterday").status_code == 422
    assert auditor.get("/console/audit/entries/0").status_code == 422
