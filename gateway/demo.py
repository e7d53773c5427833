"""`make demo`: a synthetic county, five connectors and the gateway on loopback, and the headline query.

Every step goes through the real interfaces: principals are created on the gateway's database as the
operator would (`fedgate users create`), connectors are allowed and registered over HTTP under their
pinned key fingerprints, each department signs a pre-approval rule with its own (demo) key, and the
analyst submits and runs the queries. Because the county is synthetic, the true value is shown beside
each DP figure.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aggregation.bands import BandShare, band_shares
from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit
from gateway.client import GatewayClient
from gateway.localfed import register_everything, start_federation

BAND_EDGES = (100_000, 200_000, 500_000, 600_000)
BANDS = {"100k–500k": (100_000, 500_000), "200k–600k": (200_000, 600_000)}
URBAN = ("111", "112", "121", "122", "123")
RURAL = ("210", "220")
INCOME_TERMS = (
    Term(dataset="tax.wages", measure="wage_income"),
    Term(dataset="tax.business_income", measure="business_income"),
    Term(dataset="social.pensions", measure="pension_income"),
    Term(dataset="civil.assistance", measure="assistance_income"),
    Term(dataset="social.contributions", measure="personal_contribution", sign=-1),
)
console = Console()


def headline(group: str, epsilon: str) -> QuerySpec:
    return QuerySpec(
        purpose="Monthly monitoring: households by annual disposable income band, by "
        + group.rsplit(".", 1)[-1],
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=INCOME_TERMS, lower=-200_000, upper=5_000_000, label="disposable income proxy"),
        group_by=(group,),
        statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=BAND_EDGES),),
        epsilon=Decimal(epsilon),
    )


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


def _shares_table(title: str, shares: list[BandShare], truth: dict[str, dict[str, Any]], label: str) -> Table:
    table = Table(title=title)
    for col in (label, "band", "DP share", "95% interval", "true share", "DP households"):
        table.add_column(col, justify="left" if col in (label, "band") else "right", no_wrap=col == label)
    for s in shares:
        true = truth[s.band].get(s.group)
        table.add_row(
            s.group,
            s.band,
            f"{s.share:.1%}",
            f"[{s.low:.1%}, {s.high:.1%}]",
            "-" if true is None else f"{true:.1%}",
            f"{s.households:,.0f}",
        )
    return table


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


def run_demo(
    workdir: Path, *, persons: int, fresh: bool, once: bool = True, json_out: Path | None = None
) -> None:
    county = workdir / "county"
    _ensure_county(county, persons, fresh)
    # Each demo starts with fresh gateway and connector state: budgets and served extracts begin at zero.
    for stale in (workdir / "gateway", county / "state"):
        shutil.rmtree(stale, ignore_errors=True)
    truth = json.loads((county / "truth.json").read_text())["as_linked"]
    started = time.perf_counter()
    with console.status("starting five connectors and the gateway on loopback"):
        fed = start_federation(workdir, county=county)
    with ExitStack() as stack:
        stack.callback(fed.stop)
        console.print(
            f"gateway {fed.gateway.url} and five connectors up in {time.perf_counter() - started:.1f} s"
        )
        register_everything(fed, household_only=True)
        console.print("connectors registered under pinned keys; each department signed a pre-approval rule")
        keys = fed.keys
        gw = fed.gateway
        results = {}
        with GatewayClient(gw.url, keys["analyst"]) as analyst:
            for name, group in (
                ("village", "register.persons.village"),
                ("urban_rural", "register.persons.urban_rural"),
            ):
                spec = headline(group, "0.5")
                view = analyst.submit(spec)
                t0 = time.perf_counter()
                results[name] = analyst.run(view["id"])["result"]
                took = time.perf_counter() - t0
                console.print(f"query {view['id']} ({name}) {view['state']} -> released in {took:.1f} s")
            budget = analyst.budget()
        by_code = band_shares(
            results["urban_rural"]["release"],
            edges=BAND_EDGES,
            bands=BANDS,
            group_key="register.persons.urban_rural",
            pools={"county": URBAN + RURAL, "urban": URBAN, "rural": RURAL},
        )
        by_village = band_shares(
            results["village"]["release"], edges=BAND_EDGES, bands=BANDS, group_key="register.persons.village"
        )
        true_shares = {
            "100k–500k": {**truth["share_income_100k_500k"], **truth["share_income_100k_500k"]["by_village"]},
            "200k–600k": {**truth["share_income_200k_600k"], **truth["share_income_200k_600k"]["by_village"]},
        }
        console.print(
            _shares_table("Households by disposable income band (DP, ε = 0.5)", by_code, true_shares, "area")
        )
        console.print(
            _shares_table(
                "… by village (first 8 of the public village list)", by_village[:16], true_shares, "village"
            )
        )
        console.print(
            "[dim]Disposable income is a proxy from what departments hold (wages, business income, pensions, "
            "assistance, minus personal contributions); no department holds property income. True values are "
            "shown only because the county is synthetic.[/dim]"
        )
        left, cap = budget["federation_remaining"], budget["federation_cap"]
        console.print(f"federation budget left this window: ε {left} of {cap}")
        _export_and_verify_audit(gw.url, keys["auditor"], workdir / "audit-export.jsonl")
        if json_out is not None:
            doc = {
                "results": results,
                "band_shares": [s.__dict__ for s in by_code + by_village],
                "truth_as_linked": {k: v for k, v in truth.items() if k.startswith("share_")},
            }
            json_out.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
            console.print(f"results written to {json_out}")
        if once:
            return
        console.print(f"serving: gateway {gw.url}  (analyst key {keys['analyst']})  Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")
