"""`fedgate connector check`: a dry run of a connector's configuration against its real source.

For the department admin only, printed locally: nothing of it goes to the gateway, so its figures are
exact. Per dataset it runs a trial roll-up over recent months, as an extract would (same push-down, same
ID normalisation), and reports what the department needs to see before it registers:

- rows and entities read; the share of valid, legacy and invalid IDs (few valid IDs is an error: the ID
  column probably points at something else);
- rows per month over the trial months (a period that matches none of them is an error: the format or
  the column is wrong);
- each measure's rolled-up range against its declared public bounds (how much clipping will cut);
- dimension values outside the published code list; the household mapping's coverage;

and the connector key's fingerprint and public key, which registration needs. A problem is a `Finding`
with a level: `error` findings make the command exit non-zero.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from connectors.config import DatasetSpec, EntityKind, LoadedConfig, Rollup, read_signing_key
from connectors.errors import ConfigError, ConnectorError
from connectors.ids import IdKind, normalize_many
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, Source, open_source
from connectors.sources.periods import Month

MIN_VALID_SHARE = 0.5
"""Below this share of valid IDs the ID column is taken to be the wrong column: an error."""
WARN_VALID_SHARE = 0.95
WARN_CLIPPED_SHARE = 0.05
DEFAULT_MONTHS = 3
_ROWS = "_rows"

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str


@dataclass
class MeasureRange:
    name: str
    lower_bound: int
    upper_bound: int
    minimum: float | None
    maximum: float | None
    below: int
    above: int


@dataclass
class DatasetReport:
    name: str
    period: str | None = None
    period_read_as: str | None = None
    null_periods: int = 0
    rows: int = 0
    raw_ids: int = 0
    entities: int = 0
    valid_share: float | None = None
    legacy_ids: int = 0
    invalid_ids: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    bad_values: int = 0
    rows_per_month: dict[str, int] = field(default_factory=dict)
    measures: list[MeasureRange] = field(default_factory=list)
    outside_codelist: dict[str, int] = field(default_factory=dict)
    household_coverage: float | None = None
    snapshot: dict[str, Any] | None = None
    """the snapshot extracts read now (`connectors.snapshot`): age, months, what its build skipped"""
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, message: str) -> None:
        self.findings.append(Finding(level, message))


@dataclass
class CheckReport:
    connector: str
    config: str
    months: list[str]
    public_key: str | None = None
    fingerprint: str | None = None
    findings: list[Finding] = field(default_factory=list)
    datasets: list[DatasetReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        every = self.findings + [f for d in self.datasets for f in d.findings]
        return not any(f.level == "error" for f in every)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def trial_months(end: str | None, months: int, today: datetime.date | None = None) -> list[str]:
    """`months` months ending at `end` ('YYYY-MM'), by default the last complete month."""
    if end is None:
        day = today or datetime.date.today()
        last = Month(day.year, day.month).previous()
    else:
        last = Month.parse(end)
    out = [last]
    for _ in range(months - 1):
        out.append(out[-1].previous())
    return [m.text for m in reversed(out)]


def _spec(dataset: DatasetSpec, start: str | None, end: str | None, chunk_rows: int) -> RollupSpec:
    measures: list[tuple[str, str | None, Rollup]] = [(_ROWS, None, Rollup.COUNT)]
    measures += [(m.name, m.column, m.rollup) for m in dataset.measures]
    return RollupSpec(
        relation=dataset.table or dataset.file or "",
        entity_column=dataset.entity.column,
        period_column=dataset.period.column if dataset.period and start else None,
        period_start=start if dataset.period else None,
        period_end=end if dataset.period else None,
        period=dataset.period if dataset.period and start else None,
        measures=tuple(measures),
        dimensions=tuple((d.name, d.column) for d in dataset.dimensions if d.column),
        household_column=dataset.household.column if dataset.household else None,
        chunk_rows=chunk_rows,
    )


def _read(source: Source, spec: RollupSpec) -> pd.DataFrame:
    chunks = list(source.rollup(spec))
    columns = [*spec.output_columns, BAD_VALUES]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)


def _check_dataset(
    loaded: LoadedConfig, source: Source, dataset: DatasetSpec, months: list[str]
) -> DatasetReport:
    report = DatasetReport(name=dataset.name)
    chunk_rows = loaded.config.source.chunk_rows
    try:
        source.check(dataset)
        start, end = (months[0], months[-1]) if dataset.period else (None, None)
        if dataset.period:
            report.period = f"{months[0]}..{months[-1]}"
            report.null_periods = source.null_periods(dataset.table or dataset.file or "", dataset.period)
            report.period_read_as = source.period_plan(
                dataset.table or dataset.file or "", dataset.period
            ).describe()
            for month in months:
                counts = _read(source, _spec(dataset, month, month, chunk_rows))[_ROWS]
                report.rows_per_month[month] = int(pd.to_numeric(counts).sum())
        frame = _read(source, _spec(dataset, start, end, chunk_rows))
    except ConnectorError as exc:
        report.add("error", str(exc))
        return report

    report.rows = int(pd.to_numeric(frame[_ROWS]).sum()) if len(frame) else 0
    if dataset.period and not any(report.rows_per_month.values()):
        report.add(
            "error",
            f"period column {dataset.period.column!r} matches none of the months {report.period}: check"
            " period.column and period.format (or choose the trial months with --end)",
        )
    elif dataset.period:
        empty = [m for m, n in report.rows_per_month.items() if n == 0]
        if empty:
            report.add("warning", f"no rows in {', '.join(empty)}: a month missing from the source?")
    if report.null_periods:
        report.add(
            "warning",
            f"{report.null_periods:,} rows have no period (NULL) and belong to no month: fill them or leave"
            " them out knowingly",
        )
    if BAD_VALUES in frame.columns:
        report.bad_values = int(pd.to_numeric(frame[BAD_VALUES]).sum())

    kind = IdKind.RESIDENT_ID if dataset.entity.kind is EntityKind.PERSON else IdKind.CREDIT_CODE
    raws = [v if isinstance(v, str) else "" for v in frame[ENTITY].tolist()]
    batch = normalize_many(kind, raws)
    report.raw_ids = len(raws)
    report.invalid_ids, report.legacy_ids = batch.invalid, batch.legacy
    report.invalid_reasons = dict(batch.reasons)
    valid = pd.Series([v is not None for v in batch.values], index=frame.index, dtype=bool)
    nids = pd.Series(batch.values, index=frame.index)
    report.entities = int(nids[valid].nunique())
    if raws:
        report.valid_share = round(float(valid.mean()), 4)
        if report.valid_share < MIN_VALID_SHARE:
            report.add(
                "error",
                f"only {report.valid_share:.0%} of the values in ID column {dataset.entity.column!r} are"
                f" valid {kind.value}s: is it the right column? (invalid reasons: {report.invalid_reasons})",
            )
        elif report.valid_share < WARN_VALID_SHARE:
            report.add("warning", f"{1 - report.valid_share:.1%} of the IDs are invalid and will be dropped")
    elif not dataset.period or any(report.rows_per_month.values()):
        report.add("error", "the trial roll-up read no rows")

    good = frame[valid.to_numpy()].copy()
    good["_nid"] = nids[valid]
    for m in dataset.measures:
        values = pd.to_numeric(good[m.name], errors="coerce")
        if m.scale and m.rollup is not Rollup.COUNT:
            values = values / 10**m.scale
        per_entity = (
            values.groupby(good["_nid"]).sum()
            if m.rollup is not Rollup.MAX
            else values.groupby(good["_nid"]).max()
        )
        lower, upper = m.bounds
        arr = per_entity.to_numpy(dtype=np.float64)
        rng = MeasureRange(
            name=m.name,
            lower_bound=lower,
            upper_bound=upper,
            minimum=float(np.nanmin(arr)) if len(arr) else None,
            maximum=float(np.nanmax(arr)) if len(arr) else None,
            below=int((arr < lower).sum()),
            above=int((arr > upper).sum()),
        )
        report.measures.append(rng)
        clipped = (rng.below + rng.above) / len(arr) if len(arr) else 0.0
        if clipped > WARN_CLIPPED_SHARE:
            report.add(
                "warning",
                f"measure {m.name}: {clipped:.0%} of the entities fall outside the bounds [{lower}, {upper}]"
                f" over {report.period or 'the table'} and will be clipped",
            )
    for d in dataset.dimensions:
        if d.column is None:
            continue
        domain = set(loaded.domains[(dataset.name, d.name)])
        codes = good[d.name].dropna().astype("string")
        outside = int((~codes.isin(domain)).sum())
        report.outside_codelist[d.name] = outside
        if outside:
            report.add(
                "warning",
                f"dimension {d.name}: {outside} entities carry a code outside {d.codelist}"
                " (withheld as null)",
            )
    if dataset.household is not None and len(good):
        households = good[HOUSEHOLD].astype("string").str.strip()
        report.household_coverage = round(float((households.notna() & (households != "")).mean()), 4)
        if report.household_coverage == 0:
            report.add("error", f"household column {dataset.household.column!r} is empty for every person")
        elif report.household_coverage < WARN_VALID_SHARE:
            report.add(
                "warning", f"{1 - report.household_coverage:.1%} of the persons have no household number"
            )
    return report


def run_check(loaded: LoadedConfig, *, end: str | None = None, months: int = DEFAULT_MONTHS) -> CheckReport:
    """Check keys, source and every dataset; never raises for a problem it can report."""
    from connectors.federation_keys import load_keyring
    from connectors.protocol import fingerprint, load_private_key, public_key_text

    cfg = loaded.config
    report = CheckReport(connector=cfg.name, config=str(loaded.path), months=trial_months(end, months))
    try:
        key = load_private_key(read_signing_key(loaded)).public_key()
        report.public_key = public_key_text(key)
        report.fingerprint = fingerprint(key)
    except ConfigError as exc:
        report.findings.append(Finding("error", str(exc)))
    try:
        load_keyring(cfg.federation_keyring_file)
    except ConnectorError as exc:
        report.findings.append(Finding("error", f"federation keyring: {exc}"))
    try:
        source = open_source(cfg.source)
    except ConnectorError as exc:
        report.findings.append(Finding("error", str(exc)))
        return report
    try:
        for dataset in cfg.datasets:
            checked = _check_dataset(loaded, source, dataset, report.months)
            if cfg.source.snapshots:
                _check_snapshot(loaded, source, dataset, checked)
            report.datasets.append(checked)
    finally:
        source.close()
    return report


def _check_snapshot(
    loaded: LoadedConfig, source: Source, dataset: DatasetSpec, report: DatasetReport
) -> None:
    """The snapshot's age and build counts, and whether the source changed since it was built."""
    from connectors.snapshot import read_manifest, snapshot_summary

    info = read_manifest(loaded.config.state_dir, dataset.name)
    if info is None:
        report.add(
            "info",
            "no snapshot yet: the first extract builds it, or run `fedgate connector refresh`"
            " / 尚无快照：首次提取时生成，或运行 fedgate connector refresh",
        )
        return
    report.snapshot = snapshot_summary(info)
    if info.age_seconds() > loaded.config.source.snapshot_max_age_seconds:
        report.add(
            "warning",
            f"the snapshot is older than source.snapshot_max_age_seconds"
            f" ({loaded.config.source.snapshot_max_age_seconds:,} s): the next extract rebuilds it;"
            " run `fedgate connector refresh` from the department's scheduler / 快照已过期",
        )
    try:
        now = source.fingerprint(dataset)
    except ConnectorError as exc:
        report.add("warning", f"cannot tell whether the source changed since the snapshot: {exc}")
        return
    if now is not None and now != info.fingerprint:
        report.add(
            "info",
            "the source changed since the snapshot was built: the next extract (or"
            " `fedgate connector refresh`) rebuilds it / 数据源已更新，下次提取时重建快照",
        )
