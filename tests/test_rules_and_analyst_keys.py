"""Rules are versions of (department, rule id), never deleted, and no department admin can alter or
revoke another department's rule; analysts' own keys are registered by the operator, and a submitted
query naming one must carry its signature. Each refusal is checked with the state it leaves."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import test_gateway_audit_first as audit_first
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_gateway_audit_first import Fed, _query

from connectors.protocol import (
    ApprovalRule,
    ApprovedDataset,
    WindowLimits,
    load_private_key,
    public_key_text,
    sign_query,
    sign_rule,
)
from gateway import db

# The in-process federation of the audit-first tests (its fixtures, by the names tests ask for).
county = audit_first.county
fed = audit_first.fed


def _rule(fed: Fed, department: str, rule_id: str, dataset: str, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "department": department,
        "rule_id": rule_id,
        "datasets": [ApprovedDataset(dataset=dataset)],
        "units": ["person"],
        "max_epsilon_per_query": Decimal("0.5"),
        "analysts": [fed.analyst_fingerprint("analyst")],
        "window": WindowLimits(max_queries=10, max_epsilon=Decimal(2)),
        "per_analyst": WindowLimits(max_queries=10, max_epsilon=Decimal(2)),
        **changes,
    }
    rule = ApprovalRule.model_validate(fields)
    return sign_rule(load_private_key(fed.approval_key(department)), rule).model_dump(mode="json")


def _versions(fed: Fed) -> list[tuple[str, str, int, bool, bool]]:
    with fed.ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(db.rules).order_by(db.rules.c.department, db.rules.c.rule_id)).all()
    return [
        (r.department, r.rule_id, r.version, r.superseded_at is not None, r.revoked_at is not None)
        for r in rows
        if r.rule_id == "shared-id"
    ]


def test_rules_are_versions_of_department_and_id_and_no_admin_touches_another_departments(fed: Fed) -> None:
    http = fed.http
    tax_v1 = _rule(fed, "tax", "shared-id", "wages")
    civil_v1 = _rule(fed, "civil", "shared-id", "assistance")
    assert http.post("/v1/rules", json=tax_v1, headers=fed.as_("tax")).status_code == 201
    # The same id in another department is another rule: it neither replaces nor blocks tax's.
    assert http.post("/v1/rules", json=civil_v1, headers=fed.as_("civil")).status_code == 201
    assert _versions(fed) == [("civil", "shared-id", 1, False, False), ("tax", "shared-id", 1, False, False)]
    # Tax's admin cannot register a rule for civil, even one civil's key signed.
    r = http.post("/v1/rules", json=_rule(fed, "civil", "shared-id", "assistance"), headers=fed.as_("tax"))
    assert r.status_code == 403 and r.json()["error"]["field"] == "rule"
    # A new version must name the digest of the version it replaces.
    tax_digest = ApprovalRule.model_validate(tax_v1["rule"]).digest()
    r = http.post("/v1/rules", json=_rule(fed, "tax", "shared-id", "wages"), headers=fed.as_("tax"))
    assert r.status_code == 409 and tax_digest in r.json()["error"]["message"]
    assert _versions(fed) == [("civil", "shared-id", 1, False, False), ("tax", "shared-id", 1, False, False)]
    tax_v2 = _rule(fed, "tax", "shared-id", "wages", units=["person", "household"], replaces=tax_digest)
    r = http.post("/v1/rules", json=tax_v2, headers=fed.as_("tax"))
    assert r.status_code == 201, r.text
    # The replaced version is kept, superseded; the audit entry names the version and what it replaced.
    assert _versions(fed) == [
        ("civil", "shared-id", 1, False, False),
        ("tax", "shared-id", 1, True, False),
        ("tax", "shared-id", 2, False, False),
    ]
    registered = [e for e in fed.events("rule.registered") if e["rule"]["rule_id"] == "shared-id"]
    assert [(e["department"], e["version"], e["replaces"]) for e in registered] == [
        ("tax", 1, None),
        ("civil", 1, None),
        ("tax", 2, tax_digest),
    ]
    # Revoking is by one's own department: tax revokes its rule; civil's of the same id stays.
    assert http.delete("/v1/rules/shared-id", headers=fed.as_("tax")).status_code == 204
    assert http.delete("/v1/rules/shared-id", headers=fed.as_("tax")).status_code == 404
    assert http.delete("/v1/rules/civil-tests", headers=fed.as_("tax")).status_code == 404
    assert _versions(fed) == [
        ("civil", "shared-id", 1, False, False),
        ("tax", "shared-id", 1, True, False),
        ("tax", "shared-id", 2, False, True),
    ]
    listed = http.get("/v1/rules", headers=fed.as_("operator")).json()["rules"]
    assert [(r["department"], r["rule_id"]) for r in listed if r["rule_id"] == "shared-id"] == [
        ("civil", "shared-id")
    ]
    revoked = [e for e in fed.events("rule.revoked") if e["rule_id"] == "shared-id"]
    assert [(e["department"], e["version"]) for e in revoked] == [("tax", 2)]


def test_an_expired_rule_is_refused_at_registration_and_covers_nothing(fed: Fed) -> None:
    now = int(time.time())
    stale = _rule(fed, "tax", "tax-stale", "wages", issued_at=now - 100, expires_at=now - 1)
    r = fed.http.post("/v1/rules", json=stale, headers=fed.as_("tax"))
    assert r.status_code == 422 and "expired" in r.json()["error"]["message"]
    with fed.ctx.engine.connect() as conn:
        held = conn.execute(sa.select(db.rules.c.rule_id).where(db.rules.c.rule_id == "tax-stale")).all()
    assert held == []


def _signed_submit(
    fed: Fed, who: str, key: Ed25519PrivateKey, purpose: str, signed_spec: Any = None
) -> tuple[Any, Any]:
    """Submit a query naming the analyst's key, with `key`'s signature (of `signed_spec` if given)."""
    spec = _query(purpose, analyst_key=fed.analyst_fingerprint("analyst"))
    other = signed_spec or spec
    signature = sign_query(key, other.query_id, other.digest)
    return fed.http.post(
        "/v1/queries",
        json=spec.model_dump(mode="json"),
        headers={**fed.as_(who), "x-fedgate-query-signature": signature},
    ), spec


def test_a_query_naming_an_analyst_key_carries_that_registered_key_s_signature(fed: Fed) -> None:
    http = fed.http
    own = load_private_key(fed.analyst_keys["analyst"])
    stranger = Ed25519PrivateKey.generate()
    # Registering keys is the operator's, audited; an analyst cannot pin one.
    r = http.post(
        "/v1/analysts/analyst/keys",
        json={"public_key": public_key_text(stranger.public_key())},
        headers=fed.as_("analyst"),
    )
    assert r.status_code == 403
    assert (
        http.post(
            "/v1/analysts/auditor/keys",
            json={"public_key": public_key_text(stranger.public_key())},
            headers=fed.as_("operator"),
        ).status_code
        == 404
    )  # not an analyst
    registered = fed.events("analyst_key.registered")
    assert {e["analyst"] for e in registered} == {"analyst", "other-analyst"}
    # Signed by the key the query names, which is the submitter's: stored with its signature.
    ok, spec = _signed_submit(fed, "analyst", own, "Bands by village, signed by the analyst")
    assert ok.status_code == 201, ok.text
    with fed.ctx.engine.connect() as conn:
        stored = conn.execute(
            sa.select(db.query_signatures.c.key_fingerprint).where(
                db.query_signatures.c.query_id == spec.query_id
            )
        ).scalar_one()
    assert stored == fed.analyst_fingerprint("analyst")
    submitted = [e for e in fed.events("query.submitted") if e["query_id"] == spec.query_id]
    assert submitted[0]["analyst_key"] == stored
    refusals = [
        # signed by a key nobody registered
        _signed_submit(fed, "analyst", stranger, "Bands by village, signed by a stranger"),
        # the analyst's signature of another query
        _signed_submit(
            fed,
            "analyst",
            own,
            "Bands by village, signature of another",
            _query(
                "Bands by village, the one actually signed", analyst_key=fed.analyst_fingerprint("analyst")
            ),
        ),
        # another analyst presenting the analyst's key and signature
        _signed_submit(fed, "other-analyst", own, "Bands by village, someone else's key"),
    ]
    for r, refused in refusals:
        assert r.status_code == 403, r.text
        assert r.json()["error"]["field"] in ("analyst_key", "signature")
        with fed.ctx.engine.connect() as conn:
            assert (
                conn.execute(sa.select(db.queries).where(db.queries.c.id == refused.query_id)).first() is None
            )
    # A revoked key signs nothing new.
    fp = fed.analyst_fingerprint("analyst")
    assert http.delete(f"/v1/analysts/keys/{fp}", headers=fed.as_("operator")).status_code == 204
    r, _late = _signed_submit(fed, "analyst", own, "Bands by village, after the key was revoked")
    assert r.status_code == 403
    assert fed.events("analyst_key.revoked")[-1]["key_fingerprint"] == fp
    keys = http.get("/v1/analysts/keys", headers=fed.as_("analyst")).json()["keys"]
    assert [(k["analyst"], k["revoked_at"] is not None) for k in keys] == [("analyst", True)]
