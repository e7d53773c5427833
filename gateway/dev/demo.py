"""`make demo`: a synthetic county, five connectors and the gateway on loopback, and the year-end pack.

Every step goes through the real interfaces: principals are created on the gateway's database as the
operator would (`fedgate users create`), connectors are allowed and registered over HTTP under their
pinned key fingerprints, each department signs a pre-approval rule with its own (demo) key, the operator
registers the five key groups, and the analyst runs the year-end monitoring pack (every indicator of the
county's plan, each from its own DP releases). Because the county is synthetic, its as-linked true value
is shown beside each DP figure.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.cli.indicators_view import print_run
from gateway.client import GatewayClient
from gateway.dev.localfed import register_everything, start_federation

console = Console()


def _ensure_county(county: Path, persons: int, fresh: bool) -> None:
    truth = county / "truth.json"
    if not fresh and truth.exists() and json.loads(truth.read_text())["registered_persons"] == persons:
        console.print(f"using the county of {persons:,} persons in {county} (--fresh regenerates it)")
        return
    from connectors.synth import generate_county

    shutil.rmtree(county, ignore_errors=True)
    with console.status(f"generating a synthetic county of {persons:,} persons"):
        summary = generate_county(county, persons=persons, seed=1)
    console.print(
        f"generated {summary.persons:,} persons in {summary.households:,} households and "
        f"{summary.villages} villages in {summary.elapsed_seconds:.1f} s -> {county}"
    )


def _export_and_verify_audit(url: str, auditor_key: str, out: Path) -> None:
    """As the auditor: export the whole audit log and verify it offline with the audit public key."""
    from audit.verify import verify_export

    with GatewayClient(url, auditor_key) as auditor:
        public_key = auditor.audit_checkpoint()["public_key"]
        auditor.audit_export(out)
    report = verify_export(out, [public_key])
    verdict = "[green]verified[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(
        f"audit log exported to {out} and {verdict} offline: {report.entries} entries re-hashed, "
        f"{report.checkpoints_verified} signed checkpoints checked (key {public_key.split('+')[0]})"
    )
    if not report.ok:
        raise SystemExit(f"the audit log does not verify: {report.problems[0]}")


def with_truth(doc: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """The pack's figures with the county's as-linked truth beside them, matched by figure key.

    Only a synthetic county has a truth file; the gateway never sets `exact` itself."""
    pack = truth.get("monthly_pack", {}).get("indicators", {})
    for indicator in doc["indicators"]:
        known = {
            (t["figure"], t["label"], t["group"]): t["value"] for t in pack.get(indicator["indicator"], [])
        }
        for figure in indicator["figures"]:
            figure["exact"] = known.get((figure["figure"], figure["label"], figure["group"]))
    return doc


def run_demo(
    workdir: Path, *, persons: int, fresh: bool, once: bool = True, json_out: Path | None = None
) -> None:
    county = workdir / "county"
    _ensure_county(county, persons, fresh)
    # Each demo starts with fresh gateway and connector state: budgets and served extracts begin at zero.
    for stale in (workdir / "gateway", county / "state"):
        shutil.rmtree(stale, ignore_errors=True)
    document = json.loads((county / "truth.json").read_text())
    truth, year = document["as_linked"], document["year"]
    started = time.perf_counter()
    with console.status("starting five connectors and the gateway on loopback"):
        fed = start_federation(workdir, county=county)
    with ExitStack() as stack:
        stack.callback(fed.stop)
        console.print(
            f"gateway {fed.gateway.url} and five connectors up in {time.perf_counter() - started:.1f} s"
        )
        # The demo's packs are built by the gateway and signed by no analyst: rules for every analyst,
        # which the synthetic county's connectors accept (docs/security.md, the threat model).
        register_everything(fed, analysts=("*",))
        console.print(
            "connectors registered under pinned keys; each department signed a pre-approval rule; "
            "the five key groups registered"
        )
        keys = fed.keys
        gw = fed.gateway
        period = f"{year}-12"
        with GatewayClient(gw.url, keys["analyst"]) as analyst:
            t0 = time.perf_counter()
            with console.status(f"running the year-end monitoring pack for {period}"):
                doc = analyst.run_pack("year_end", period=period)
            took = time.perf_counter() - t0
            queries = sum(len(i["queries"]) for i in doc["indicators"])
            console.print(
                f"year-end pack for {period}: {len(doc['indicators'])} indicators from {queries} DP "
                f"releases, ε {doc['epsilon']} in all (the calendar's), released in {took:.1f} s"
            )
            budget = analyst.budget()
        print_run(console, with_truth(doc, truth))
        console.print(
            "[dim]The 'exact' column is the county's as-linked truth (truth.json), shown only because the "
            "county is synthetic; no analyst ever sees it.[/dim]"
        )
        for year in budget["years"]:
            console.print(
                f"federation budget left for data year {year['year']}: ε {year['remaining']} of {year['cap']}"
            )
        _export_and_verify_audit(gw.url, keys["auditor"], workdir / "audit-export.jsonl")
        if json_out is not None:
            json_out.write_text(json.dumps(doc, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
            console.print(f"results written to {json_out}")
        if once:
            return
        console.print(f"serving: gateway {gw.url}  (analyst key {keys['analyst']})  Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")
