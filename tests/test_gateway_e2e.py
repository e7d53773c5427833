"""End to end over real HTTP: the gateway and five connectors as processes; tax in PostgreSQL, social
insurance in MariaDB; roles, approvals, runs, idempotence, failures and leak scans."""

from __future__ import annotations

import base64
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from county_fixture import headline_query
from dbservers import private_database

from aggregation.query import QuerySpec
from connectors.protocol import (
    Approval,
    ApprovedDataset,
    ErrorCode,
    ExtractRequest,
    TokenSpec,
    WindowLimits,
    load_private_key,
    public_key_text,
    sign_approval,
)
from connectors.tokens import Suite
from gateway.client import GatewayClient, GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation
from gateway.dev.process import start_gateway

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb, pytest.mark.slow]

# The module runs about ten queries of epsilon 1 for one analyst: room for all of them, whatever order.
GATEWAY_ENV = {
    "FEDGATE_DATA_YEAR_EPSILON": "20",
    "FEDGATE_DEFAULT_ANALYST_QUOTA": "15",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    pg = private_database("postgres")
    maria = private_database("mariadb")
    tax_url, social_url = next(pg), next(maria)
    federation = start_federation(
        tmp_path_factory.mktemp("fed"), tax_url=tax_url, social_url=social_url, env=GATEWAY_ENV
    )
    try:
        register_everything(federation)
        yield federation
    finally:
        federation.stop()
        next(pg, None)
        next(maria, None)


def _query(purpose: str, **changes: object) -> QuerySpec:
    data = headline_query().model_dump()
    data.update(purpose=purpose, **changes)
    return QuerySpec.model_validate(data)


def test_headline_query_runs_once_and_is_served_again_for_free(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        before = analyst.budget(["2025"])
        view = analyst.submit(_query("Headline bands by village, end to end"))
        assert view["state"] == "approved"
        assert set(view["covered_by"]) == {"register", "tax", "social", "civil"}
        first = analyst.run(view["id"])
        again = analyst.run(view["id"])
        fetched = analyst.result(view["id"])
        after = analyst.budget(["2025"])
    assert first == again == fetched
    cells = first["result"]["release"]["cells"]
    villages = {c["groups"]["register.persons.village"] for c in cells}
    domain = set(fed.truth()["as_linked"]["households_by_village"])
    assert domain <= villages  # every public village is released, empty or not
    assert all(c["low"] <= c["display"] <= c["high"] for c in cells)  # clamped alike
    spent = Decimal(before["years"][0]["remaining"]) - Decimal(after["years"][0]["remaining"])
    assert spent == Decimal("1")


def test_role_matrix(fed: Federation) -> None:
    with fed.client("other-analyst") as other:
        view = other.submit(_query("Bands by village, not covered by any rule"))
        assert view["state"] == "submitted"  # the rules name only 'analyst'
        with pytest.raises(GatewayError) as err:
            other.run(view["id"])
        assert err.value.status == 409 and err.value.code == "not_approved"
    qid = view["id"]
    spec = QuerySpec.model_validate(view["spec"])
    # An analyst cannot approve, even with a correctly signed approval in hand.
    signed = sign_approval(
        load_private_key(fed.approval_key("tax")),
        Approval(
            department="tax",
            query_id=qid,
            query_digest=spec.digest,
            unit=spec.unit,
            period_start=spec.period_start,
            period_end=spec.period_end,
            datasets=tuple(ApprovedDataset.model_validate(d) for d in view["required_approvals"]["tax"]),
            epsilon=spec.epsilon,
        ),
    )
    for who in ("analyst", "other-analyst", "auditor", "operator"):
        r = httpx.post(
            f"{fed.gateway.url}/v1/queries/{qid}/approvals",
            json=signed.model_dump(mode="json"),
            headers={"authorization": f"Bearer {fed.keys[who]}"},
        )
        assert r.status_code == 403, who
    # A department admin cannot approve for another department, nor with another department's key.
    with fed.client("tax") as tax_admin:
        with pytest.raises(GatewayError) as err:
            tax_admin.approve(qid, fed.approval_key("tax"), "social", schemas=fed.schemas("social"))
        assert err.value.status == 403
        with pytest.raises(GatewayError) as err:
            tax_admin.approve(qid, fed.approval_key("social"), "tax", schemas=fed.schemas("tax"))
        assert err.value.code == "not_approved"
    # An auditor cannot run or submit queries.
    with fed.client("auditor") as auditor:
        for call in (lambda: auditor.run(qid), lambda: auditor.submit(_query("An auditor trying to ask"))):
            with pytest.raises(GatewayError) as err:
                call()
            assert err.value.status == 403
    # Nobody without a valid key gets anything.
    for headers in ({}, {"authorization": "Bearer fgk_not-a-key"}, {"authorization": "Basic abc"}):
        r = httpx.get(fed.gateway.url + "/v1/catalog", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # Every department approves with its own key: the query becomes approved and runs.
    for dept in view["departments"]:
        with fed.client(dept) as admin:
            view = admin.approve(qid, fed.approval_key(dept), dept, schemas=fed.schemas(dept))
    assert view["state"] == "approved"
    assert set(view["covered_by"].values()) == {"approval"}
    with fed.client("other-analyst") as other:
        assert other.run(qid)["query_id"] == qid
    # The connector itself refuses an approval signed with another department's key.
    approval = Approval(
        department="social",
        query_id=spec.query_id,
        query_digest=spec.digest,
        unit=spec.unit,
        period_start=spec.period_start,
        period_end=spec.period_end,
        datasets=(ApprovedDataset(dataset="pensions", measures=("pension_income",)),),
        epsilon=spec.epsilon,
    )
    from gateway.federation import ConnectorLink, ConnectorRefused

    forged = sign_approval(load_private_key(fed.approval_key("tax")), approval)
    req = ExtractRequest(
        connector="social",
        query_id=spec.query_id,
        query_digest=spec.digest,
        query=spec,
        dataset="pensions",
        unit=spec.unit,
        period_start=spec.period_start,
        period_end=spec.period_end,
        measures=("pension_income",),
        token=TokenSpec(epoch=1),
        epsilon=spec.epsilon,
        approval=forged,
    )
    gateway_key = load_private_key((fed.county / "keys" / "gateway.key").read_bytes())
    social_key = load_private_key((fed.county / "keys" / "social-connector.key").read_bytes()).public_key()
    with (
        ConnectorLink(
            fed.connectors["social"].url,
            connector="social",
            gateway_key=gateway_key,
            connector_key=social_key,
        ) as client,
        pytest.raises(ConnectorRefused) as refused,
    ):
        client.extract(req)
    assert refused.value.status == 403 and refused.value.code == "not_approved"
    assert refused.value.wire_code is ErrorCode.NOT_APPROVED


def test_validation_errors_name_the_field_and_never_500(fed: Federation) -> None:
    headers = {"authorization": f"Bearer {fed.keys['analyst']}"}
    base = headline_query().model_dump(mode="json")
    cases = [
        ({**base, "epsilon": "5"}, "epsilon"),
        ({**base, "group_by": ["register.persons.sex"]}, "group_by.0"),
        ({**base, "group_by": ["tax.wages; DROP TABLE x"]}, "body.group_by.0"),
        ({**base, "unit": "martian"}, "body.unit"),
        ({k: v for k, v in base.items() if k != "purpose"}, "body.purpose"),
    ]
    for body, field in cases:
        r = httpx.post(fed.gateway.url + "/v1/queries", json=body, headers=headers)
        assert r.status_code == 422, body
        assert r.json()["error"]["field"] == field
    r = httpx.post(fed.gateway.url + "/v1/queries", content=b"{not json", headers=headers)
    assert r.status_code == 422


def test_no_raw_id_token_or_exact_count_anywhere(fed: Federation) -> None:
    texts: list[str] = []
    with fed.client("analyst") as analyst:
        view = analyst.submit(
            _query("Bands by urban-rural code, leak scan", group_by=("register.persons.urban_rural",))
        )
        texts.append(str(view))
        texts.append(str(analyst.run(view["id"])))
        texts.append(str(analyst.catalog()))
        texts.append(str(analyst.budget()))
    metrics = httpx.get(
        fed.gateway.url + "/metrics", headers={"authorization": f"Bearer {fed.keys['operator']}"}
    )
    assert metrics.status_code == 200
    texts.append(metrics.text)
    texts.append((fed.root / "gateway" / "gateway.log").read_text(errors="replace"))
    with sqlite3.connect(fed.root / "gateway" / "gateway.sqlite3") as conn:  # audit entries included
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            texts.append(str(conn.execute(f'SELECT * FROM "{table}"').fetchall()))
    blob = "\n".join(texts)
    with sqlite3.connect(fed.county / "register.db") as reg:
        ids = {r[0].strip().upper() for r in reg.execute("SELECT id_number FROM persons") if r[0]}
    seen_ids = set(re.findall(r"\d{17}[\dX]|\d{15}", blob))
    assert not seen_ids & ids, "a registered ID number appears in a response, log or database row"
    truth = fed.truth()["as_linked"]
    exact = {truth["household_count"], truth["person_count"], truth["persons_seen"]}
    for count in exact:
        # Whole numbers only: the same digits inside a hash or a token's hex are not a count.
        assert not re.search(rf"(?<![\w.]){count}(?![\w.])", blob), count
    # Tokens: no 16-byte value in hex or base64 that a connector would hand out for these queries.
    from connectors.federation_keys import load_keyring

    keyring = load_keyring(fed.county / "keys" / "federation-keyring.json")
    tok = keyring.tokenizer(epoch=1, suite=Suite.HMAC_SHA256, entity_kind="person", query_id=view["id"])

    for rid in list(ids)[:200]:
        t = tok.token(rid)
        assert t.hex() not in blob and base64.b64encode(t).decode() not in blob, "a person token leaked"


def test_a_stopped_connector_charges_nothing(fed: Federation) -> None:
    civil = fed.connectors["civil"]
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands while civil affairs is down"))
        before = analyst.budget(["2025"])["years"][0]["remaining"]
        civil.stop()
        try:
            with pytest.raises(GatewayError) as err:
                analyst.run(view["id"])
            assert err.value.status == 503 and err.value.code == "connector_unavailable"
            assert analyst.budget(["2025"])["years"][0]["remaining"] == before
            assert analyst.query(view["id"])["state"] == "approved"
        finally:
            from connectors.process import start_connector

            restarted = start_connector(fed.county / "connectors" / "civil.yaml", log_dir=fed.root / "logs")
            fed.connectors["civil"] = restarted
        with fed.client("operator") as operator:
            operator.allow_endpoint(restarted.url)
        with fed.client("civil") as admin:
            from connectors.protocol import fingerprint, load_private_key

            key = load_private_key((fed.county / "keys" / "civil-connector.key").read_bytes()).public_key()
            admin.register_connector("civil", restarted.url, fingerprint(key))
        assert analyst.run(view["id"])["query_id"] == view["id"]


def test_the_allow_list_is_checked_on_every_call(fed: Federation) -> None:
    import sqlalchemy as sa

    from gateway import db

    civil = fed.connectors["civil"].url
    engine = sa.create_engine(fed.database_url)
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands while civil affairs is off the allow-list"))
        before = analyst.budget(["2025"])["years"][0]["remaining"]
        # The operator takes the registered connector's endpoint off the allow-list.
        with engine.begin() as conn:
            conn.execute(db.allowed_endpoints.delete().where(db.allowed_endpoints.c.url == civil))
        try:
            with pytest.raises(GatewayError) as err:
                analyst.run(view["id"])
            assert err.value.status == 503 and err.value.code == "connector_unavailable"
            assert analyst.budget(["2025"])["years"][0]["remaining"] == before
            assert analyst.query(view["id"])["state"] == "approved"
        finally:
            with fed.client("operator") as operator:
                operator.allow_endpoint(civil)
            engine.dispose()
        assert analyst.run(view["id"])["query_id"] == view["id"]


def test_a_department_admin_cannot_take_over_another_departments_rule(fed: Federation) -> None:
    """A rule is (department, rule id): another department can neither register, replace nor revoke the
    tax bureau's rule; the same id in its own department is a rule of its own (docs/security.md)."""
    with fed.client("tax") as tax:
        before = {r["rule_id"]: r for r in tax._do("GET", "/v1/rules")["rules"]}
    assert "tax-tests" in before
    scope = ApprovedDataset(dataset="assistance", measures=(), dimensions=())
    limits = {
        "rule_id": "tax-tests",
        "datasets": [scope],
        "units": ("person",),
        "max_epsilon_per_query": Decimal("0.1"),
        "window": WindowLimits(max_queries=10, max_epsilon=Decimal(1)),
    }
    with fed.client("civil") as civil:
        # A rule naming the tax bureau, from civil affairs, is refused before its signature is read.
        with pytest.raises(GatewayError) as err:
            civil.register_rule(fed.approval_key("civil"), department="tax", **limits)
        assert err.value.status == 403 and err.value.field == "rule"
        # Revoking "tax-tests" finds only civil affairs' own rules: there is none.
        with pytest.raises(GatewayError) as err:
            civil.revoke_rule("tax-tests")
        assert err.value.status == 404
        # The same id in civil affairs is a rule of its own, beside the tax bureau's, and revoked alone.
        own = civil.register_rule(fed.approval_key("civil"), department="civil", **limits)
        assert (own["department"], own["rule_id"], own["replaces"]) == ("civil", "tax-tests", None)
        civil.revoke_rule("tax-tests")
        assert all(r["rule_id"] != "tax-tests" for r in civil.rules())
    # The tax bureau's rule is untouched, and still its own.
    with fed.client("tax") as tax:
        after = {r["rule_id"]: r for r in tax._do("GET", "/v1/rules")["rules"]}
    assert after["tax-tests"] == before["tax-tests"]


def test_a_killed_gateway_serves_the_stored_numbers_after_restart(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands before a crash"))
        first = analyst.run(view["id"])
        slow = analyst.submit(_query("Bands while the gateway is killed"))
    # Kill the gateway while a second run is in flight, then again after the first was released.
    outcome: dict[str, object] = {}

    def run_slow() -> None:
        try:
            with fed.client("analyst") as a:
                outcome["doc"] = a.run(slow["id"])
        except (GatewayError, httpx.HTTPError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(0.3)
    fed.gateway.process.send_signal(signal.SIGKILL)
    fed.gateway.process.wait()
    thread.join()
    fed.gateway = start_gateway(
        fed.root / "gateway",
        signing_key_file=fed.county / "keys" / "gateway.key",
        audit_key_file=fed.county / "keys" / "audit.key",
        env=GATEWAY_ENV,
    )
    # After the crash the audit log verifies offline, without a gap, and every release has its entry.
    from audit.verify import verify_export

    with fed.client("auditor") as auditor:
        public_key = auditor.audit_checkpoint()["public_key"]
        export = auditor.audit_export(fed.root / "after-crash.jsonl")
        released = {
            e["event"]["query_id"]
            for e in auditor.audit_entries(action="query.released", limit=1000)["entries"]
        }
    report = verify_export(export, [public_key])
    assert report.ok, report.problems[:3]
    with fed.client("analyst") as analyst:
        for q in analyst.queries():
            # Every release has its entry; an entry without a release is a run that died between the two
            # (audited and charged, never served).
            if q["state"] == "released":
                assert q["id"] in released, q["id"]
            if q["id"] in released:
                assert q["state"] in ("released", "failed"), q["id"]
        assert analyst.run(view["id"]) == first
        state = analyst.query(slow["id"])["state"]
        assert state in ("released", "failed", "approved")
        if state == "released":
            assert analyst.run(slow["id"]) == analyst.result(slow["id"])
        if "doc" in outcome:
            assert analyst.result(slow["id"]) == outcome["doc"]


def test_gateway_client_errors_are_typed(fed: Federation) -> None:
    with GatewayClient(fed.gateway.url, "fgk_wrong") as nobody, pytest.raises(GatewayError) as err:
        nobody.budget()
    assert err.value.status == 401


def test_the_command_line_submits_approves_runs_and_shows_budget(
    fed: Federation, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import json as jsonlib

    from typer.testing import CliRunner

    from gateway.cli.main import app

    work = tmp_path_factory.mktemp("cli")
    spec_file = work / "query.json"
    spec_file.write_text(_query("Bands by village from the command line").model_dump_json())
    runner = CliRunner()
    env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys["other-analyst"]}
    submitted = runner.invoke(app, ["query", "submit", str(spec_file), "--json"], env=env)
    assert submitted.exit_code == 0, submitted.output
    view = jsonlib.loads(submitted.stdout)
    assert view["state"] == "submitted"
    for dept in view["departments"]:
        key = fed.county / "keys" / f"{dept}-approval.key"
        admin_env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys[dept]}
        # The department comes from the admin's own API key (GET /v1/me).
        # The query is planned against the department's own connectors, shown, and signed (--yes).
        approved = runner.invoke(
            app,
            [
                "approve",
                view["id"],
                "--key",
                str(key),
                *fed.approve_args(dept),
                "--yes",
            ],
            env=admin_env,
        )
        assert approved.exit_code == 0, approved.output
        assert "purpose" in approved.stdout
        assert ("household mapping" in approved.stdout) == (dept == "register")
    csv_path, xlsx_path, plot_path = work / "result.csv", work / "result.xlsx", work / "result.png"
    files = ["--csv", str(csv_path), "--xlsx", str(xlsx_path), "--plot", str(plot_path)]
    ran = runner.invoke(app, ["--lang", "en", "query", "run", view["id"], *files], env=env)
    assert ran.exit_code == 0, ran.output
    assert "95% intervals" in ran.stdout
    header = csv_path.read_text(encoding="utf-8-sig").splitlines()[0]
    assert header.startswith(
        "village,village name,statistic,bin,probability,estimate (DP),95% lower,95% upper"
    )
    from openpyxl import load_workbook

    book = load_workbook(xlsx_path, read_only=True)
    assert book.sheetnames == ["result", "notes"]
    assert plot_path.read_bytes().startswith(b"\x89PNG")
    # The same result in Chinese (the default), village names beside their codes.
    shown = runner.invoke(app, ["query", "result", view["id"]], env={**env, "FEDGATE_LANG": "", "LANG": "C"})
    assert shown.exit_code == 0 and "的发布结果" in shown.stdout and "社区" in shown.stdout
    with fed.client("other-analyst") as gw:
        frame = gw.result_frame(view["id"])
    assert {"village", "village_name", "estimate", "lower", "upper", "prob"} <= set(frame.columns)
    assert frame["village_name"].dropna().str.len().min() > 0
    budget = runner.invoke(app, ["budget", "--json"], env=env)
    assert budget.exit_code == 0 and jsonlib.loads(budget.stdout)["analyst"] == "other-analyst"
    refused = runner.invoke(app, ["query", "run", "q-doesnotexist000"], env=env)
    assert refused.exit_code == 1 and "not_found" in refused.output


def test_a_query_run_fails_closed_when_the_audit_log_cannot_be_written(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands while the audit log is read-only"))
        before = analyst.budget(["2025"])["years"][0]["remaining"]
    db = fed.root / "gateway" / "gateway.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
        )
    try:
        with fed.client("analyst") as analyst, pytest.raises(GatewayError) as err:
            analyst.run(view["id"])
        assert err.value.status == 503 and err.value.code == "audit_unavailable"
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER audit_read_only")
    with fed.client("analyst") as analyst:
        assert analyst.budget(["2025"])["years"][0]["remaining"] == before
        assert analyst.query(view["id"])["state"] == "approved"
        with pytest.raises(GatewayError):
            analyst.result(view["id"])


def test_the_gateway_and_a_connector_logs_reconcile(fed: Federation) -> None:
    from typer.testing import CliRunner

    from audit.reconcile import reconcile
    from gateway.cli.main import app

    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands before reconciling the logs"))
        analyst.run(view["id"])
    with fed.client("auditor") as auditor:
        gateway_export = auditor.audit_export(fed.root / "gateway-for-reconcile.jsonl")
    connector_export = fed.root / "tax-log.jsonl"
    exported = CliRunner().invoke(
        app,
        [
            "connector",
            "export-log",
            "--config",
            str(fed.county / "connectors" / "tax.yaml"),
            "--out",
            str(connector_export),
        ],
    )
    assert exported.exit_code == 0, exported.output
    # The only disagreement allowed: a run the killed gateway sent but never saw answered, which its log
    # shows as sent (connector.request) without an answer.
    differences = reconcile(gateway_export, connector_export)
    assert all(d.kind == "call_answer_unrecorded" for d in differences), differences
    # The connector witnessed the gateway's checkpoints: its log names them.
    assert '"checkpoint":"fedgate-gateway' in connector_export.read_text()
    # Every connector that served cosigned the checkpoint it witnessed; the gateway logged each
    # cosignature, and with the departments' keys an auditor sees how far each witnessed the log.
    from audit.cosignature import CosignatureVerifier
    from audit.verify import verify_export

    with fed.client("auditor") as auditor:
        audit_key = auditor.audit_checkpoint()["public_key"]
    keys = [
        CosignatureVerifier(
            name,
            load_private_key(fed.county.joinpath("keys", f"{name}-connector.key").read_bytes()).public_key(),
        )
        for name in fed.connectors
    ]
    report = verify_export(gateway_export, [audit_key], witness_keys=keys, cosigned=[connector_export])
    assert report.ok, report.problems
    assert "tax" in report.witnessed and all(w.agrees for w in report.witnessed.values())
    assert report.witnessed["tax"].department == "tax" and report.anchors_checked >= len(report.witnessed)
    # The department's scheduled check, as deploy/systemd/fedgate-reconcile@.service runs it: fetch as an
    # auditor, verify with its own witness key and save the checkpoint; the next run pins it.
    key_file, fetched, pinned = fed.root / "auditor.key", fed.root / "fetched.jsonl", fed.root / "pinned.note"
    key_file.write_text(fed.keys["auditor"])
    runner = CliRunner()
    got = runner.invoke(
        app,
        ["audit", "fetch", "--url", fed.gateway.url, "--api-key-file", str(key_file), "--out", str(fetched)],
    )
    assert got.exit_code == 0, got.output
    tax_key = f"tax={public_key_text(keys[[k.name for k in keys].index('tax')].public_key)}"
    check = ["audit", "verify", str(fetched), "-k", audit_key, "--witness-key", tax_key]
    check += ["--cosigned", str(connector_export), "--save-checkpoint", str(pinned)]
    first = runner.invoke(app, check)
    assert first.exit_code == 0, first.output
    assert pinned.read_text().startswith("fedgate-gateway\n")
    again = runner.invoke(app, [*check, "--trusted-checkpoint", str(pinned)])
    assert again.exit_code == 0, again.output


def _set_register(fed: Federation, enabled: bool) -> None:
    action = "enable" if enabled else "disable"
    r = httpx.post(
        f"{fed.gateway.url}/v1/connectors/register/{action}",
        headers={"authorization": f"Bearer {fed.keys['operator']}"},
    )
    assert r.status_code == 200, r.text


def test_a_person_query_runs_only_while_the_register_is_enabled(fed: Federation) -> None:
    person = {"unit": "person", "member_cap": 2, "neighbouring": "change_household"}
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Persons by income band, register disabled after approval", **person))
        assert view["state"] == "approved"
        before = analyst.budget(["2025"])["years"][0]["remaining"]
        _set_register(fed, False)
        try:
            # Re-planned at run time: refused before anything is reserved, and the query stays runnable.
            with pytest.raises(GatewayError) as err:
                analyst.run(view["id"])
            assert (err.value.status, err.value.field) == (422, "unit")
            assert "household register" in err.value.message
            assert analyst.budget(["2025"])["years"][0]["remaining"] == before
            assert analyst.query(view["id"])["state"] == "approved"
            with pytest.raises(GatewayError) as err:
                analyst.submit(_query("Persons by income band, submitted without a register", **person))
            assert (err.value.status, err.value.field) == (422, "unit")
        finally:
            _set_register(fed, True)
        doc = analyst.run(view["id"])
    assert doc["neighbouring"] == "change_household" == doc["result"]["neighbouring"]
    release = doc["result"]["release"]
    assert release["neighbouring"] == "change_household" and release["d_in"] == 4  # 2 members, changed
    assert any("cannot link" in note for note in doc["result"]["notes"])
