"""The department admin's and the auditor's console pages in a real browser, in Chinese and English.

A department admin opens the inbox, sees exactly what a query takes from the department, picks the
approval key file (Playwright's `set_input_files`) and signs in the page; the gateway verifies that
signature like any approval and the query then runs. The signature the page made is the one Python's
`sign_approval` makes (Ed25519 is deterministic), and a key file of another department is refused in the
page before anything is sent. An auditor filters the log, opens an entry and sees it verified in the page
against the audit key pinned there, and sees a tampered proof (served by a gateway that lies) fail; then
checkpoints and witnessed sizes, the exports, and a reconcile with the tax connector's own log.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from console_fixture import Console, console_browser, console_federation  # noqa: F401 (fixtures)

from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from audit.checkpoint import load_signer
from audit.verify import verify_export
from connectors.config import Unit
from connectors.protocol import ApprovedDataset, SignedApproval, load_private_key, sign_approval
from gateway.approval_draft import draft_approval, signing_digest
from gateway.dev.localfed import Federation
from gateway.i18n import Lang, translate

# The module starts a federation and a browser once; on a loaded machine that alone can take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHOTS = {"zh-CN": "", "en": "-en"}


def _query(purpose: str) -> QuerySpec:
    return QuerySpec(
        purpose=purpose,
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=2_000_000),
        group_by=("register.persons.village",),
        statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=(100_000, 200_000, 500_000)),),
        epsilon=Decimal("0.5"),
    )


@pytest.fixture(scope="module")
def waiting(console_fed: Federation) -> Iterator[dict[str, str]]:
    """Queries by an analyst no department's rule names, so each department must approve one by one;
    the register approves the first through the client, leaving tax's approval to the page."""
    ids = {}
    with console_fed.client("other-analyst") as analyst:
        for name, purpose in (
            ("approve", "Wage bands by village for the console test"),
            ("reject", "Wage bands by village, to be refused in the console"),
        ):
            # A query is named by its digest: a fresh purpose each run keeps its id fresh too.
            ids[name] = analyst.submit(_query(f"{purpose} ({secrets.token_hex(4)})"))["id"]
    # The register approves with the one-line command the page offers; it prints the digest it signs.
    from typer.testing import CliRunner

    from gateway.cli.main import app

    qid = ids["approve"]
    done = CliRunner().invoke(
        app,
        [
            "approve",
            qid,
            "--key",
            str(_key_file(console_fed, "register")),
            "--url",
            console_fed.gateway.url,
            *console_fed.approve_args("register"),
            "--yes",
        ],
        env={"FEDGATE_API_KEY": console_fed.keys["register"]},
    )
    assert done.exit_code == 0, done.output
    view = _view(console_fed, qid)
    scopes = [ApprovedDataset.model_validate(s) for s in view["required_approvals"]["register"]]
    draft = draft_approval(QuerySpec.model_validate(view["spec"]), "register", scopes)
    assert f"sha256:{signing_digest(draft)}" in done.output
    yield ids


def _view(fed: Federation, query_id: str) -> dict[str, Any]:
    with fed.client("other-analyst") as analyst:
        return analyst.query(query_id)  # type: ignore[no-any-return]


def _key_file(fed: Federation, department: str) -> Path:
    return fed.county / "keys" / f"{department}-approval.key"


def test_admin_inbox_shows_what_the_query_takes_and_the_page_signs_the_approval(
    console: Console, console_fed: Federation, waiting: dict[str, str]
) -> None:
    qid = waiting["approve"]
    console.sign_in(console_fed.keys["tax"])
    console.goto("/console/admin/approvals")
    assert console.page.locator("h1").inner_text() == translate("console_admin.inbox_title", Lang.ZH)
    card = console.page.locator(f"section.query[data-query='{qid}']")
    assert card.get_attribute("data-waiting") == "yes"
    # Exactly what the query takes from tax: the wages dataset, its one measure, no household mapping.
    view = _view(console_fed, qid)
    scopes = [ApprovedDataset.model_validate(s) for s in view["required_approvals"]["tax"]]
    assert [(s.dataset, s.measures) for s in scopes] == [("wages", ("wage_income",))]
    assert "wages" in card.locator("table.parts").inner_text()
    assert "wage_income" in card.locator("table.parts").inner_text()
    assert "0.5" in card.inner_text()
    console.screenshot("admin-inbox")

    card.locator("h2 a").click()
    console.page.wait_for_url(f"**/console/admin/approvals/{qid}")
    draft = draft_approval(QuerySpec.model_validate(view["spec"]), "tax", scopes)
    digest = signing_digest(draft)
    assert console.page.locator("#digest").inner_text() == f"sha256:{digest}"
    assert f"fedgate approve {qid} --key" in console.page.locator("#cli-command").inner_text()

    # Another department's key file: the page refuses it before sending anything.
    console.page.set_input_files("#key-file", str(_key_file(console_fed, "register")))
    console.page.click("#sign-approve")
    status = console.page.locator("#sign-status")
    status.wait_for(state="visible")
    console.page.wait_for_selector("#sign-status[data-state='error']")
    assert status.inner_text() == translate("console_admin.sign_wrong_key", Lang.ZH)
    assert "tax" not in {d["department"] for d in _view(console_fed, qid)["decisions"]}

    console.page.set_input_files("#key-file", str(_key_file(console_fed, "tax")))
    console.screenshot("admin-approval")
    console.page.click("#sign-approve")
    console.page.wait_for_selector("#sign-status[data-state='done']")
    console.page.wait_for_load_state()

    view = _view(console_fed, qid)
    assert view["state"] == "approved"
    assert view["covered_by"]["tax"] == "approval"
    with console_fed.client("auditor") as auditor:
        entries = auditor._do("GET", "/v1/audit/entries?action=query.approved&limit=1000")["entries"]
    mine = [
        e["event"] for e in entries if e["event"].get("query_id") == qid and e["event"]["department"] == "tax"
    ]
    assert len(mine) == 1 and mine[0]["actor"] == "tax"
    # The page's signature is Python's, byte for byte, and it verifies under the tax key.
    expected: SignedApproval = sign_approval(
        load_private_key(_key_file(console_fed, "tax").read_bytes()), draft
    )
    assert mine[0]["approval_signature"] == expected.signature
    assert mine[0]["approval_key"] == expected.key_fingerprint

    with console_fed.client("other-analyst") as analyst:
        result = analyst.run(qid)
    assert _view(console_fed, qid)["state"] == "released"
    assert result["query_id"] == qid
    console.sign_out()


def test_admin_rejects_in_english_and_a_stale_or_forged_post_changes_nothing(
    console: Console, console_fed: Federation, waiting: dict[str, str]
) -> None:
    qid = waiting["reject"]
    console.sign_in(console_fed.keys["tax"])
    console.use_language("en")
    console.goto(f"/console/admin/approvals/{qid}")
    assert console.page.locator("#signer h2").inner_text() == translate("console_admin.sign_title", Lang.EN)

    # A signature over other bytes than the page's draft is refused (409) and stores nothing.
    refused = console.page.evaluate(
        """async (qid) => {
          const csrf = document.querySelector('meta[name="csrf-token"]').content;
          const post = (body, token) => fetch(`/console/admin/approvals/${qid}/approve`, {method: 'POST',
            headers: {'content-type': 'application/json', accept: 'application/json',
                      'x-csrf-token': token},
            body: JSON.stringify(body)}).then(r => r.status);
          const body = {digest: '0'.repeat(64), signature: 'AAAA', key_fingerprint: 'a'.repeat(64)};
          return [await post(body, csrf), await post(body, 'forged'),
                  await post({...body, key_fingerprint: 'nope'}, csrf)];
        }""",
        qid,
    )
    assert refused == [409, 403, 422]
    assert _view(console_fed, qid)["decisions"] == []

    console.page.fill("#reason", "The purpose does not justify reading wages by village.")
    console.page.once("dialog", lambda dialog: dialog.accept())
    console.page.click("#reject")
    console.page.wait_for_url(f"**/console/admin/approvals/{qid}")
    assert _view(console_fed, qid)["state"] == "rejected"
    assert (
        translate("console_admin.status_rejected", Lang.EN, by="tax")
        in console.page.locator("h1").inner_text()
    )
    console.use_language("zh-CN")
    console.sign_out()


def test_admin_sees_rules_with_their_state_and_connectors_with_health(
    console: Console, console_fed: Federation
) -> None:
    console.sign_in(console_fed.keys["tax"])
    for lang in ("zh-CN", "en"):
        if lang == "en":
            console.use_language("en")
        console.goto("/console/admin/rules")
        row = console.page.locator("#rules tr[data-rule='tax-tests']")
        assert row.get_attribute("data-state") == "active"
        assert translate("console_admin.rule_active", Lang(lang)) in row.inner_text()
        console.screenshot("admin-rules" + SHOTS[lang])
        console.goto("/console/admin/connectors")
        section = console.page.locator("section.connector[data-connector='tax']")
        assert section.locator(".health").inner_text() == translate("console_admin.health_ok", Lang(lang))
        # Another department's connectors are not listed.
        assert console.page.locator("section.connector[data-connector='social']").count() == 0
        console.screenshot("admin-connectors" + SHOTS[lang])
    console.use_language("zh-CN")
    console.sign_out()


def _audit_vkey(fed: Federation) -> str:
    return load_signer(fed.county / "keys" / "audit.key").vkey


def _pin(console: Console, vkey: str) -> None:
    console.page.fill("#pin-input", vkey)
    console.page.click("#pin")


def test_auditor_filters_the_log_and_verifies_an_entry_in_the_page(
    console: Console, console_fed: Federation, waiting: dict[str, str]
) -> None:
    console.sign_in(console_fed.keys["auditor"])
    console.goto("/console/audit/log")
    console.page.fill("input[name=action]", "query.approved")
    console.page.fill("input[name=query]", waiting["approve"])
    console.page.click("#filter")
    console.page.wait_for_url(re.compile(r".*action=query\.approved.*"))
    rows = console.page.locator("#entries tbody tr")
    assert rows.count() == 2  # the register's approval (client) and tax's (page)
    assert {rows.nth(i).get_attribute("data-action") for i in range(rows.count())} == {"query.approved"}

    rows.last.locator("a").first.click()
    console.page.wait_for_url(re.compile(r".*/console/audit/entries/\d+$"))
    # Nothing pinned yet in this browser: nothing is claimed verified.
    console.page.wait_for_selector("#check-hash[data-state='ok']")
    assert console.page.locator("#verdict").get_attribute("data-state") == "pending"
    _pin(console, _audit_vkey(console_fed))
    console.page.wait_for_selector("#verdict[data-state='ok']")
    for check in ("check-hash", "check-inclusion", "check-signature"):
        assert console.page.locator(f"#{check}").get_attribute("data-state") == "ok"
    assert console.page.locator("#verdict").inner_text() == translate("console_audit.verdict_ok", Lang.ZH)
    assert json.loads(console.page.locator("#entry-json").inner_text())["event"]["department"] == "tax"
    console.screenshot("audit-entry")
    entry_path = console.page.url.removeprefix(console.base_url)

    # A gateway that serves a proof with one flipped bit: the page says so.
    def tamper(route: Any) -> None:
        response = route.fetch()
        body = response.text()
        proof = re.search(r'data-proof="\[&#34;([A-Za-z0-9+/=]+)&#34;', body)
        assert proof is not None
        first = proof.group(1)
        flipped = ("B" if first[0] == "A" else "A") + first[1:]
        route.fulfill(response=response, body=body.replace(first, flipped, 1))

    console.page.route(f"**{entry_path}", tamper)
    console.use_language("en")
    console.page.wait_for_selector("#verdict[data-state='failed']")
    assert console.page.locator("#check-inclusion").get_attribute("data-state") == "failed"
    assert console.page.locator("#check-signature").get_attribute("data-state") == "ok"
    assert console.page.locator("#verdict").inner_text() == translate("console_audit.verdict_failed", Lang.EN)
    console.screenshot("audit-entry-tampered-en")
    console.page.unroute(f"**{entry_path}")
    console.goto(entry_path)
    console.page.wait_for_selector("#verdict[data-state='ok']")
    assert console.page.locator("#verdict").inner_text() == translate("console_audit.verdict_ok", Lang.EN)
    console.use_language("zh-CN")

    # The list verifies every entry on the page with the pinned key; one evidence answer with a forged
    # entry hash fails that row alone.
    console.goto("/console/audit/log?action=query.approved")
    console.page.wait_for_selector("#list-verdict[data-state='ok']")
    cells = console.page.locator("#entries td.proof")
    assert cells.count() >= 2
    assert {cells.nth(i).get_attribute("data-state") for i in range(cells.count())} == {"ok"}
    console.screenshot("audit-log")
    seq = console.page.locator("#entries tbody tr").first.get_attribute("data-seq")

    def forge(route: Any) -> None:
        response = route.fetch()
        evidence = response.json()
        evidence["hash"] = ("0" if evidence["hash"][0] != "0" else "1") + evidence["hash"][1:]
        route.fulfill(response=response, json=evidence)

    console.page.route(f"**/console/audit/entries/{seq}/evidence", forge)
    console.goto("/console/audit/log?action=query.approved")
    console.page.wait_for_selector("#list-verdict[data-state='failed']")
    assert (
        console.page.locator(f"#entries tr[data-seq='{seq}'] td.proof").get_attribute("data-state")
        == "failed"
    )
    states = {cells.nth(i).get_attribute("data-state") for i in range(1, cells.count())}
    assert states == {"ok"}
    console.page.unroute(f"**/console/audit/entries/{seq}/evidence")


def test_auditor_sees_checkpoints_witnesses_exports_and_reconciles(
    console: Console, console_fed: Federation, tmp_path: Path
) -> None:
    console.goto("/console/audit/checkpoints")
    # The run in the first test sent checkpoints to the register and tax connectors, which cosigned them.
    for name in ("register", "tax"):
        row = console.page.locator(f"#witnessed tr[data-connector='{name}']")
        assert int(row.locator("td").nth(2).inner_text()) > 0
    assert console.page.locator("#checkpoints tbody tr").count() >= 1
    console.screenshot("audit-checkpoints")

    csv_text = console.page.request.get(
        console.base_url + "/console/audit/export.csv?action=query.rejected"
    ).text()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows and {r["action"] for r in rows} == {"query.rejected"}
    export = tmp_path / "audit.jsonl"
    export.write_bytes(console.page.request.get(console.base_url + "/console/audit/export.jsonl").body())
    report = verify_export(export, [_audit_vkey(console_fed)])
    assert report.ok, report

    from typer.testing import CliRunner

    from gateway.cli.main import app

    tax_log = tmp_path / "tax-log.jsonl"
    config = console_fed.county / "connectors" / "tax.yaml"
    done = CliRunner().invoke(
        app, ["connector", "export-log", "--config", str(config), "--out", str(tax_log)]
    )
    assert done.exit_code == 0, done.output
    console.goto("/console/audit/reconcile")
    console.page.set_input_files("#connector-log", str(tax_log))
    console.page.click("#reconcile")
    console.page.wait_for_load_state()
    assert console.page.locator("#reconcile-agree").count() == 1
    console.screenshot("audit-reconcile")

    # A connector log that claims a call the gateway never logged: the report shows the difference.
    lines = tax_log.read_text().splitlines()
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join(lines[:1]) + "\n")  # header only: every gateway extract call is missing there
    console.goto("/console/audit/reconcile")
    console.page.set_input_files("#connector-log", str(forged))
    console.page.click("#reconcile")
    console.page.wait_for_load_state()
    assert console.page.locator("#reconcile-differ").count() == 1
    kinds = {
        console.page.locator("#differences tbody tr").nth(i).get_attribute("data-kind")
        for i in range(console.page.locator("#differences tbody tr").count())
    }
    assert "call_missing_in_connector" in kinds
    console.sign_out()
