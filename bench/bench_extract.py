"""Connector extract time against the bare SQL `GROUP BY` on the same SQLite file, in the same run.

The county (200,000 persons, 12 months of wages; 20,000 with --quick) is generated once and cached
under bench/results/. The baseline is the roll-up alone, run with the standard `sqlite3` module; the
extract adds ID normalisation, re-aggregation, clipping, derived dimensions, tokens and Arrow
encoding. Target: extract / baseline <= 1.5. The same extract from a warm snapshot (`connectors.snapshot`)
skips the source: target <= 0.5 of the bare GROUP BY; the snapshot's build time is reported beside it.
"""

from __future__ import annotations

import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

from bench.common import BenchResult, cold_rollups, repeat, wire_query
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.protocol import (
    Approval,
    ApprovedDataset,
    ExtractRequest,
    SignedApproval,
    TokenSpec,
    sha256_hex,
)
from connectors.snapshot import SnapshotStore
from connectors.sources import open_source

RESULTS = Path(__file__).resolve().parent / "results"


def county(persons: int) -> Path:
    out = RESULTS / f"county-{persons}"
    if not (out / "truth.json").exists():
        from connectors.synth import generate_county

        generate_county(out, persons=persons, seed=11)
    return cold_rollups(out)


def _request(query_id: str, measures: tuple[str, ...], epoch: int) -> ExtractRequest:
    digest = sha256_hex(query_id.encode())
    approval = Approval(
        department="tax",
        query_id=query_id,
        query_digest=digest,
        unit="person",  # type: ignore[arg-type]
        period_start="2025-01",
        period_end="2025-12",
        datasets=(ApprovedDataset(dataset="wages", measures=measures),),
        epsilon=Decimal("1"),
    )
    # The extractor itself does not check approvals (the service does), so an unsigned stand-in suffices.
    signed = SignedApproval(approval=approval, key_fingerprint="0" * 64, signature="")
    return ExtractRequest(
        query=wire_query("tax", "wages", measures, query_id),
        connector="tax",
        query_id=query_id,
        query_digest=digest,
        dataset="wages",
        unit="person",  # type: ignore[arg-type]
        period_start="2025-01",
        period_end="2025-12",
        measures=measures,
        token=TokenSpec(epoch=epoch),
        epsilon=Decimal("1"),
        approval=signed,
    )


def run(quick: bool) -> list[BenchResult]:
    persons = 20_000 if quick else 200_000
    root = county(persons)
    loaded = load_config(root / "connectors" / "tax.yaml")
    cfg = loaded.config
    dataset = cfg.dataset("wages")
    assert dataset is not None and dataset.table is not None
    db_path = cfg.source.url.removeprefix("sqlite:///")
    keyring = load_keyring(cfg.federation_keyring_file)
    source = open_source(cfg.source)
    extractor = Extractor(loaded, source, keyring)
    measures = tuple(m.name for m in dataset.measures)
    columns = ", ".join("COUNT(*)" if m.column is None else f"SUM({m.column})" for m in dataset.measures)
    sql = (
        f"SELECT {dataset.entity.column}, {columns} FROM {dataset.table} "
        f"WHERE {dataset.period.column if dataset.period else 'month'} BETWEEN ? AND ? "
        f"GROUP BY {dataset.entity.column}"
    )

    def baseline() -> int:
        with sqlite3.connect(db_path) as db:
            return len(db.execute(sql, ("2025-01", "2025-12")).fetchall())

    counter = iter(range(1_000_000))

    def extract() -> int:
        req = _request(f"bench-extract-{next(counter):06d}", measures, keyring.current_epoch)
        result = extractor.run(req, dataset)
        return len(result.to_ipc())

    extract()  # warm the page cache and imports for both sides alike
    baseline()
    times = 3 if quick else 5
    base, base_spread = repeat(baseline, times)
    ext, ext_spread = repeat(extract, times)

    # The same extract from a warm snapshot, in a state directory of its own (the county's stays cold).
    state = RESULTS / f"snapshot-state-{persons}"
    shutil.rmtree(state, ignore_errors=True)
    store = SnapshotStore(loaded, source, state_dir=state)
    snapped = Extractor(loaded, source, keyring, store)
    build, build_spread = repeat(lambda: store.refresh(dataset), 1 if quick else 3)

    def warm_extract() -> int:
        req = _request(f"bench-snap-{next(counter):06d}", measures, keyring.current_epoch)
        return len(snapped.run(req, dataset).to_ipc())

    warm_extract()  # loads the snapshot file once, as the first extract after a start does
    warm, warm_spread = repeat(warm_extract, times)
    source.close()
    shutil.rmtree(state, ignore_errors=True)
    label = f"{persons:,} persons x 12 months, SQLite"
    return [
        BenchResult("extract", "bare SQL GROUP BY (sqlite3)", base, "s", base_spread, label),
        BenchResult("extract", "connector extract (in process)", ext, "s", ext_spread, label),
        BenchResult("extract", "overhead ratio extract / GROUP BY", ext / base, "x", None, "target <= 1.5"),
        BenchResult("extract", "snapshot refresh (build from the source)", build, "s", build_spread, label),
        BenchResult("extract", "connector extract, warm snapshot", warm, "s", warm_spread, label),
        BenchResult(
            "extract", "ratio warm-snapshot extract / GROUP BY", warm / base, "x", None, "target <= 0.5"
        ),
    ]
