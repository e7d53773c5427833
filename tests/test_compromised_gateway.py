"""The compromised gateway: holding ONLY the gateway's signing key, its audit key and its database (with
every department's standing rule in it), a script plays the gateway against a loopback federation and
obtains nothing beyond what approved, still-valid, not-yet-served queries allow.

Every attempt below is signed with the real gateway key, carries a checkpoint signed with the real audit
key that includes the attempt's own `connector.extract_planned` entry (appended to the real log), and a
real department-signed rule or approval taken from the gateway's database. Each is refused at the
connector, and the connectors' state shows it: nothing served, nothing counted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import yaml
from connector_fixture import signed_call
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from typer.testing import CliRunner
from witness_fixture import PlayedGateway

from aggregation.query import Filter, Measure, QuerySpec, Statistic, StatisticKind, Term
from audit.checkpoint import Checkpointer, parse_signer
from audit.store import AuditLog
from connectors.protocol import (
    ApprovedDataset,
    ExtractRequest,
    SignedApproval,
    SignedRule,
    TokenSpec,
    WindowLimits,
    fingerprint,
    load_private_key,
    public_key_text,
    sign_query,
)
from connectors.synth import generate_county
from connectors.vocabulary import Unit
from gateway.cli.main import app
from gateway.dev.localfed import Federation, register_everything, start_federation
from gateway.settings import GatewaySettings

WINDOW = str(time.gmtime().tm_year)
VILLAGE = "register.persons.village"


def _household_count(purpose: str, epsilon: str = "0.5") -> QuerySpec:
    return QuerySpec(
        purpose=purpose,
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        group_by=(VILLAGE,),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal(epsilon),
    )


def _wage_sum(purpose: str) -> QuerySpec:
    return QuerySpec(
        purpose=purpose,
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=500_000),
        filters=(Filter(dimension="register.persons.urban_rural", values=("111", "112", "121")),),
        statistics=(Statistic(kind=StatisticKind.SUM),),
        epsilon=Decimal("0.5"),
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("compromised")
    county = root / "county"
    generate_county(county, persons=1_200, seed=13)
    # The departments keep the default: no rule for every analyst ("*") is accepted.
    for path in (county / "connectors").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        doc["policy"].pop("accept_any_analyst_rules", None)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    federation = start_federation(root, county=county)
    try:
        register_everything(federation, groups=False)  # rules name the analyst's key fingerprint
        yield federation
    finally:
        federation.stop()


class Attacker:
    """What a compromised gateway holds: its signing key, its audit key, its database. Nothing else."""

    def __init__(self, fed: Federation) -> None:
        self.key = load_private_key((fed.county / "keys" / "gateway.key").read_bytes())
        log = AuditLog.open(fed.database_url)
        signer = parse_signer((fed.county / "keys" / "audit.key").read_text())
        self.audit = PlayedGateway(log, signer, store=False)
        # The gateway's own checkpoints: same log, same key, same origin.
        self.audit._checkpointer = Checkpointer(
            log, signer, origin=GatewaySettings.model_fields["audit_origin"].default
        )
        self.db = sqlite3.connect(fed.database_url.removeprefix("sqlite:///"))
        self.urls = {name: c.url for name, c in fed.connectors.items()}
        self.epoch = 1

    def rule(self, department: str, rule_id: str) -> SignedRule:
        """A department's standing rule, as the gateway's database holds it."""
        text = self.db.execute(
            "SELECT signed_json FROM rule_versions WHERE department = ? AND rule_id = ? "
            "ORDER BY version DESC",
            (department, rule_id),
        ).fetchone()[0]
        return SignedRule.model_validate_json(text)

    def signature(self, query_id: str) -> tuple[str, str]:
        return self.db.execute(
            "SELECT k.public_key, s.signature FROM query_signatures s "
            "JOIN analyst_keys k ON k.fingerprint = s.key_fingerprint WHERE s.query_id = ?",
            (query_id,),
        ).fetchone()

    def send(self, connector: str, body: dict[str, Any]) -> httpx.Response:
        """Log the extract, sign a checkpoint that includes it, and send it under the gateway's key."""
        url = self.urls[connector]
        against = httpx.get(url + "/v1/health").json()["witnessed_size"]
        try:
            req = ExtractRequest.model_validate(body)
        except ValueError:
            # What the protocol's own model refuses to build is sent as raw JSON, as an attacker would.
            req = None
        if req is not None:
            req = self.audit.witnessed(req, against)
            payload = req.body()
        else:
            payload = json.dumps(
                {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in body.items()},
                default=str,
            ).encode()
        return signed_call(
            url, "/v1/extract", key=self.key, connector=connector, body=payload, query_id=body["query_id"]
        )

    def extract(
        self,
        connector: str,
        dataset: str,
        spec: QuerySpec,
        cover: SignedRule | SignedApproval,
        **changes: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "connector": connector,
            "query_id": spec.query_id,
            "query_digest": spec.digest,
            "query": spec,
            "dataset": dataset,
            "unit": spec.unit,
            "period_start": spec.period_start,
            "period_end": spec.period_end,
            "measures": (),
            "dimensions": (),
            "household": False,
            "token": TokenSpec(epoch=self.epoch),
            "epsilon": spec.epsilon,
            "approval": cover if isinstance(cover, SignedApproval) else None,
            "rule": cover if isinstance(cover, SignedRule) else None,
        }
        body.update(changes)
        return body


def _served(fed: Federation, connector: str) -> tuple[set[str], str]:
    """The query ids a connector served and the epsilon it counted in this window, from its own state."""
    state = fed.county / "state" / connector / "connector-state.sqlite3"
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        served = {r[0] for r in db.execute("SELECT query_id FROM served WHERE status != 'pending'")}
        spent = db.execute(
            "SELECT COALESCE(SUM(CAST(epsilon AS REAL)), 0) FROM spent WHERE window = ?", (WINDOW,)
        ).fetchone()[0]
    finally:
        db.close()
    return served, str(spent)


def test_a_compromised_gateway_obtains_nothing_beyond_approved_valid_unserved_queries(
    fed: Federation,
) -> None:
    # The honest path first: the analyst's own signed query runs under the standing rules.
    with fed.client("analyst") as analyst:
        honest = analyst.submit(_household_count("households by village, honestly asked"))
        assert honest["state"] == "approved"
        analyst.run(honest["id"])
        # A second one the analyst signed and the rules approved, not yet run.
        pending = analyst.submit(_household_count("households by village, asked and not yet run", "0.25"))
        assert pending["state"] == "approved"
    with fed.client("other-analyst") as other:
        # Another analyst's properly signed query: the rules do not name them.
        others = other.submit(_household_count("households by village, by an analyst no rule names"))
        assert others["state"] == "submitted"
    # A rule the register signs with a two-second life, held in the gateway's database.
    with fed.client("register") as admin:
        admin.register_rule(
            fed.approval_key("register"),
            department="register",
            rule_id="register-short",
            datasets=[ApprovedDataset(dataset="persons", dimensions=("village",), household=True)],
            units=("household",),
            max_epsilon_per_query=Decimal("0.5"),
            window=WindowLimits(max_queries=100, max_epsilon=Decimal(10)),
            per_analyst=WindowLimits(max_queries=100, max_epsilon=Decimal(10)),
            analysts=(fed.analyst_fingerprint("analyst"),),
            expires_at=int(time.time()) + 2,
        )
    # The gateway is taken over: stopped, and played from here on with its keys and database only.
    fed.gateway.stop()
    before = {c: _served(fed, c) for c in fed.connectors}
    attacker = Attacker(fed)
    rule = attacker.rule("register", "register-short")
    standing = attacker.rule("register", "register-tests")
    tax_rule = attacker.rule("tax", "tax-tests")
    pending_spec = QuerySpec.model_validate(pending["spec"])
    key, sig = attacker.signature(pending_spec.query_id)
    signed = {"analyst_key": key, "analyst_signature": sig}
    refusals: dict[str, httpx.Response] = {}

    # 1. An invented query id under the standing rule, unsigned by any analyst.
    invented = _household_count("a query the gateway made up itself")
    refusals["invented, unsigned"] = attacker.send(
        "register",
        attacker.extract("register", "persons", invented, standing, dimensions=("village",), household=True),
    )
    # 2. An invented query signed by an "analyst" the gateway registered itself.
    mallory = Ed25519PrivateKey.generate()
    forged = invented.model_copy(update={"analyst_key": fingerprint(mallory.public_key())})
    refusals["invented, gateway's own analyst"] = attacker.send(
        "register",
        attacker.extract(
            "register",
            "persons",
            forged,
            standing,
            dimensions=("village",),
            household=True,
            analyst_key=public_key_text(mallory.public_key()),
            analyst_signature=sign_query(mallory, forged.query_id, forged.digest),
        ),
    )
    # 3. The real analyst's signature moved onto an invented query.
    moved = invented.model_copy(update={"analyst_key": pending_spec.analyst_key})
    refusals["invented, a real signature moved"] = attacker.send(
        "register",
        attacker.extract(
            "register", "persons", moved, standing, dimensions=("village",), household=True, **signed
        ),
    )
    # 4. A tiny epsilon (the 1E-18), on the pending query's own signature.
    refusals["tiny epsilon"] = attacker.send(
        "register",
        attacker.extract(
            "register",
            "persons",
            pending_spec,
            standing,
            dimensions=("village",),
            household=True,
            epsilon=Decimal("1E-18"),
            **signed,
        ),
    )
    # 5. Extra fields beyond what the pending query needs of the register.
    refusals["extra fields"] = attacker.send(
        "register",
        attacker.extract(
            "register",
            "persons",
            pending_spec,
            standing,
            dimensions=("village", "sex", "birth_year_band"),
            household=True,
            **signed,
        ),
    )
    # What IS allowed: the pending query, approved, valid and not yet served, exactly as planned. It is
    # served once (the attacker gets what the analyst's run would have got, tokens of that query only).
    exact = attacker.send(
        "register",
        attacker.extract(
            "register", "persons", pending_spec, standing, dimensions=("village",), household=True, **signed
        ),
    )
    assert exact.status_code == 200, exact.text
    # 6. The household token for a query that is not a household query (an organisation query reads
    # nothing of the register).
    employers = QuerySpec(
        purpose="employers' wage bills, made up by the gateway",
        unit=Unit.ORGANISATION,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(
            terms=(Term(dataset="tax.employer_wages", measure="employer_wage_bill"),), lower=0, upper=10**8
        ),
        statistics=(Statistic(kind=StatisticKind.SUM),),
        epsilon=Decimal("0.5"),
    )
    refusals["household token outside a household query"] = attacker.send(
        "register", attacker.extract("register", "persons", employers, standing, household=True)
    )
    # 7. A rule naming another analyst: the other analyst's real signature, under the rule naming 'analyst'.
    others_spec = QuerySpec.model_validate(others["spec"])
    okey, osig = attacker.signature(others_spec.query_id)
    refusals["rule naming another analyst"] = attacker.send(
        "register",
        attacker.extract(
            "register",
            "persons",
            others_spec,
            standing,
            dimensions=("village",),
            household=True,
            analyst_key=okey,
            analyst_signature=osig,
        ),
    )
    # 8. An expired rule (the short one, two seconds old by now), for the pending query.
    time.sleep(max(0.0, rule.rule.expires_at + 1 - time.time()))
    refusals["expired rule"] = attacker.send(
        "register",
        attacker.extract(
            "register", "persons", pending_spec, rule, dimensions=("village",), household=True, **signed
        ),
    )
    # 9. A revoked rule: the register revokes its standing rule at its own connector (the gateway's
    # tables are the attacker's, so revoking there would not stop it).
    admin_key = fed.county / "keys" / "register-admin.key"
    out = CliRunner().invoke(
        app,
        [
            "connector",
            "revoke-rule",
            "register-tests",
            "--config",
            str(fed.county / "connectors" / "register.yaml"),
            "--key",
            str(fed.county / "keys" / "register-approval.key"),
            "--admin-key-file",
            str(admin_key),
            "--url",
            fed.connectors["register"].url,
            "--reason",
            "gateway compromised",
        ],
    )
    assert out.exit_code == 0, out.output
    refusals["revoked rule"] = attacker.send(
        "register",
        attacker.extract(
            "register", "persons", pending_spec, standing, dimensions=("village",), household=True, **signed
        ),
    )
    # 10. Another department's rule over the tax connector, for a query no analyst signed.
    refusals["tax rule, invented query"] = attacker.send(
        "tax",
        attacker.extract(
            "tax", "wages", _wage_sum("wages the gateway made up"), tax_rule, measures=("wage_income",)
        ),
    )

    expected = {
        "invented, unsigned": (403, "not_approved", "does not cover this analyst"),
        "invented, gateway's own analyst": (403, "not_approved", "does not cover this analyst"),
        "invented, a real signature moved": (403, "not_approved", "signature of the query does not verify"),
        "tiny epsilon": (422, "invalid_request", "epsilon"),
        "extra fields": (403, "not_in_plan", "does not need field sex"),
        "household token outside a household query": (403, "not_in_plan", "reads nothing of dataset persons"),
        "rule naming another analyst": (403, "not_approved", "does not cover this analyst"),
        "expired rule": (403, "not_approved", "expired"),
        "revoked rule": (403, "not_approved", "revoked"),
        "tax rule, invented query": (403, "not_approved", "does not cover this analyst"),
    }
    got = {what: (r.status_code, r.json()["error"], r.json()["message"]) for what, r in refusals.items()}
    for what, (status, code, reason) in expected.items():
        assert got[what][:2] == (status, code) and reason in got[what][2], (what, got[what])
        assert "arrow" not in refusals[what].headers.get("content-type", ""), what
    # Nothing served, nothing counted, at any connector.
    after = {c: _served(fed, c) for c in fed.connectors}
    assert {c: v for c, v in after.items() if c != "register"} == {
        c: v for c, v in before.items() if c != "register"
    }
    served_before, spent_before = before["register"]
    served_after, spent_after = after["register"]
    assert honest["id"] in served_before
    assert served_after - served_before == {pending_spec.query_id}  # the allowed one, and nothing else
    assert Decimal(spent_after) - Decimal(spent_before) == Decimal("0.25")
