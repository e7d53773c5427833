"""Extraction: from a department's rows to one tokenised, clipped row per entity.

    source roll-up (in the database) -> normalise IDs -> re-aggregate by normalised ID
      -> clip to public bounds -> public-domain dimensions -> per-query tokens -> Arrow, sorted by token

Sloppy and legacy forms of one ID arrive as different raw IDs, so rows are re-aggregated after
normalisation: exactly one row per entity leaves. Invalid IDs are dropped and counted for the
department's own quality report. Rows are sorted by token so the answer carries no trace of the source's
order (which follows ID numbers, hence birth dates and regions).

A request with a baseline period runs the roll-up twice, over the query period and over the baseline,
and joins the two by normalised ID: each measure `m` comes as `m` and `m + BASELINE_SUFFIX`, both
clipped, 0 where the entity has no rows in that period; an entity with rows in either period appears.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from connectors.config import DatasetSpec, DerivedDimension, LoadedConfig
from connectors.federation_keys import FederationKeyring
from connectors.ids import IdKind, normalize_many
from connectors.protocol import BASELINE_SUFFIX, HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN, ExtractRequest
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, Source
from connectors.tokens import TOKEN_BYTES
from connectors.vocabulary import EntityKind, Rollup

if TYPE_CHECKING:
    from connectors.snapshot import Snapshot, SnapshotStore

_REAGG = {Rollup.SUM: "sum", Rollup.COUNT: "sum", Rollup.MAX: "max"}
_NID = "_nid"


@dataclass
class QualityCounters:
    """Per-extract data quality, for the department's admin only (exact, so never forwarded).

    The ID counters count what each source roll-up returned: with a baseline there are two roll-ups, so
    a raw ID seen in both periods is counted once in each.
    """

    raw_ids: int = 0
    invalid_ids: int = 0
    legacy_ids: int = 0
    cleaned_ids: int = 0
    duplicate_ids: int = 0
    bad_values: int = 0
    out_of_domain: int = 0
    missing_household: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "invalid_reasons"}
        d["invalid_reasons"] = dict(self.invalid_reasons)
        return d


@dataclass(frozen=True)
class Extract:
    table: pa.Table
    quality: QualityCounters
    snapshot: str | None = None
    """the snapshot it was read from (named in the connector's local log), None if read from the source"""

    def to_ipc(self) -> bytes:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        return sink.getvalue()


def rollup_spec(
    dataset: DatasetSpec,
    request: ExtractRequest,
    chunk_rows: int,
    *,
    period: tuple[str, str] | None = None,
) -> RollupSpec:
    """The source roll-up for a request, built from configured names only.

    `period` replaces the request's period range (for the baseline roll-up).
    """
    start, end = period if period is not None else (request.period_start, request.period_end)
    measures = []
    for name in request.measures:
        m = dataset.measure(name)
        assert m is not None, "measures are validated against the configuration before extraction"
        measures.append((m.name, m.column, m.rollup))
    dims = []
    for name in request.dimensions:
        d = dataset.dimension(name)
        assert d is not None
        if d.column is not None:
            dims.append((d.name, d.column))
    declared = dataset.period
    return RollupSpec(
        relation=dataset.table or dataset.file or "",
        entity_column=dataset.entity.column,
        period_column=declared.column if declared and start else None,
        period_start=start if declared else None,
        period_end=end if declared else None,
        period=declared if declared and start else None,
        measures=tuple(measures),
        dimensions=tuple(dims),
        household_column=dataset.household.column if request.household and dataset.household else None,
        chunk_rows=chunk_rows,
    )


def _derived(nids: pd.Series, kind: DerivedDimension) -> pd.Series:
    if kind is DerivedDimension.SEX:
        return pd.Series(np.where(nids.str[16].astype(int) % 2 == 1, "1", "2"), index=nids.index)
    if kind is DerivedDimension.REGION_CODE:
        return nids.str[:6]
    years = nids.str[6:10].astype(int)
    start = np.where(years < 1900, 1800, years // 10 * 10)
    end = np.where(years < 1900, 1899, start + 9)
    return pd.Series([f"{s}-{e}" for s, e in zip(start, end, strict=True)], index=nids.index)


def _merge_repeated(
    frame: pd.DataFrame, aggs: dict[str, tuple[str, str]], *, keys: tuple[str, ...] = (_NID,)
) -> pd.DataFrame:
    """Collapse the rows that share a normalised ID (and the other `keys`) into one, by `aggs`."""
    # Only IDs seen more than once need re-aggregating; they are few, and a group-by over every row
    # (object columns included) would cost seconds at county scale.
    repeated = frame.duplicated(subset=list(keys), keep=False)
    if not repeated.any():
        return frame
    if aggs:
        merged = frame[repeated].groupby(list(keys), sort=False).agg(**aggs).reset_index()
    else:
        merged = frame.loc[repeated, list(keys)].drop_duplicates()
    return pd.concat([frame[~repeated], merged[frame.columns]], ignore_index=True)


def _join_baseline(main: pd.DataFrame, base: pd.DataFrame, spec: RollupSpec) -> pd.DataFrame:
    """One row per entity with rows in either period: `m` from `main`, `m + BASELINE_SUFFIX` from `base`.

    Each side already has one row per normalised ID. Dimensions and the household number are the
    maximum over both periods, as one roll-up over the union of their rows would give; a measure is 0
    in a period where the entity has no rows.
    """
    main_measures = [n for n, _c, _r in spec.measures]
    base = base.rename(columns={n: n + BASELINE_SUFFIX for n in main_measures})
    both = pd.concat([main, base], ignore_index=True)
    # An ID in both periods has two rows whose measure columns are disjoint (NaN on the other side), so
    # "max" keeps each side's value whatever the measure's own roll-up.
    aggs = {c: (c, "max") for c in both.columns if c != _NID}
    both = _merge_repeated(both, aggs)
    for name in main_measures:
        for column in (name, name + BASELINE_SUFFIX):
            both[column] = both[column].fillna(0)
    return both


def _add_quality(into: QualityCounters, more: dict[str, Any]) -> None:
    for name, value in more.items():
        if name == "invalid_reasons":
            into.invalid_reasons.update(value)
        elif hasattr(into, name):
            setattr(into, name, getattr(into, name) + value)


class Extractor:
    """Runs one approved extract, from the dataset's snapshot or (without one) from the source.

    The roll-up before tokens — the source's GROUP BY, normalised IDs, re-aggregated — is the expensive
    part. With `snapshots` it comes from the dataset's snapshot (`connectors.snapshot`): the one snapshot
    opened at the start serves the whole extract, and its build counts are the extract's quality counts.
    Without, the source is read for every extract. Tokens, clipping and dimensions are made afresh for
    every request either way (tokens of two queries never link).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        source: Source,
        keyring: FederationKeyring,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self._loaded = loaded
        self._source = source
        self._keyring = keyring
        self._snapshots = snapshots

    def run(self, request: ExtractRequest, dataset: DatasetSpec) -> Extract:
        quality = QualityCounters()
        chunk_rows = self._loaded.config.source.chunk_rows
        spec = rollup_spec(dataset, request, chunk_rows)
        snapshot = self._snapshots.open(dataset) if self._snapshots is not None else None
        if snapshot is not None:
            _add_quality(quality, snapshot.info.quality)
        frame = self._rolled_up(spec, dataset, quality, snapshot)
        # (output column, measure): the query period's columns, then with a baseline the baseline's.
        outputs = [(name, name) for name in request.measures]
        baseline = (request.baseline_start, request.baseline_end)
        # Without measures a baseline would add no column, so it does not widen the population either.
        if baseline[0] is not None and baseline[1] is not None and request.measures:
            base_spec = rollup_spec(dataset, request, chunk_rows, period=(baseline[0], baseline[1]))
            base = self._rolled_up(base_spec, dataset, quality, snapshot)
            frame = _join_baseline(frame, base, spec)
            outputs = [(c, n) for n in request.measures for c in (n, n + BASELINE_SUFFIX)]

        columns: dict[str, pa.Array] = {}
        for column, name in outputs:
            m = dataset.measure(name)
            assert m is not None
            lower, upper = m.bounds
            clipped = np.clip(np.rint(frame[column].to_numpy(dtype=np.float64)), lower, upper)
            columns[column] = pa.array(clipped.astype(np.int64))
        for name in request.dimensions:
            d = dataset.dimension(name)
            assert d is not None
            values = frame[name].astype("string") if d.column else _derived(frame[_NID], d.derived)  # type: ignore[arg-type]
            domain = self._loaded.domains[(dataset.name, d.name)]
            inside = values.isin(domain)
            quality.out_of_domain += int((~inside & values.notna()).sum())
            codes = [v if ok else None for v, ok in zip(values.tolist(), inside.tolist(), strict=True)]
            columns[name] = pa.array(codes, type=pa.string()).dictionary_encode()

        tokenizer = self._keyring.tokenizer(
            epoch=request.token.epoch,
            suite=request.token.suite,
            entity_kind=dataset.entity.kind.value,
            query_id=request.query_id,
        )
        tokens = tokenizer.tokens(frame[_NID].tolist())
        out: dict[str, pa.Array] = {TOKEN_COLUMN: pa.array(tokens, type=pa.binary(TOKEN_BYTES))}
        out.update(columns)
        if spec.household_column is not None:
            households = frame[HOUSEHOLD].astype("string").str.strip().str.upper()
            missing = households.isna() | (households == "")
            quality.missing_household = int(missing.sum())
            house_tok = self._keyring.tokenizer(
                epoch=request.token.epoch,
                suite=request.token.suite,
                entity_kind="household",
                query_id=request.query_id,
            )
            flags = missing.tolist()
            present = [h for h, miss in zip(households.tolist(), flags, strict=True) if not miss]
            made = iter(house_tok.tokens(present))
            hh = [None if miss else next(made) for miss in flags]
            out[HOUSEHOLD_TOKEN_COLUMN] = pa.array(hh, type=pa.binary(TOKEN_BYTES))
        table = pa.table(out)
        table = table.sort_by(TOKEN_COLUMN) if table.num_rows else table
        return Extract(table=table, quality=quality, snapshot=snapshot.id if snapshot is not None else None)

    def _rolled_up(
        self, spec: RollupSpec, dataset: DatasetSpec, quality: QualityCounters, snapshot: Snapshot | None
    ) -> pd.DataFrame:
        """One roll-up by normalised ID: from the extract's snapshot, or read from the source."""
        if snapshot is not None:
            return snapshot.rollup(spec, dataset)
        return self._read_rollup(spec, dataset, quality)

    def _read_rollup(self, spec: RollupSpec, dataset: DatasetSpec, quality: QualityCounters) -> pd.DataFrame:
        """One source roll-up, by normalised ID: one row per valid entity, measures numeric (0 if bad)."""
        chunks = list(self._source.rollup(spec))
        frame = (
            pd.concat(chunks, ignore_index=True)
            if chunks
            else pd.DataFrame(columns=list(spec.output_columns))
        )
        frame = normalise_rollup(frame, spec, dataset, quality)
        return finish_measures(frame, spec, dataset, quality)


def normalise_rollup(
    frame: pd.DataFrame,
    spec: RollupSpec,
    dataset: DatasetSpec,
    quality: QualityCounters,
    *,
    keys: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Source roll-up rows by normalised ID (and `keys`): invalid IDs dropped, rows of one ID merged.

    Measures stay as the source gave them (a sum of a month without values stays missing); the counts
    of what was dropped or cleaned go to `quality`.
    """
    id_kind = IdKind.RESIDENT_ID if dataset.entity.kind is EntityKind.PERSON else IdKind.CREDIT_CODE
    raws = [v if isinstance(v, str) else "" for v in frame[ENTITY].tolist()]
    batch = normalize_many(id_kind, raws)
    quality.raw_ids += len(raws)
    quality.invalid_ids += batch.invalid
    quality.legacy_ids += batch.legacy
    quality.cleaned_ids += batch.cleaned
    quality.invalid_reasons.update(batch.reasons)
    frame[_NID] = batch.values
    frame = frame[frame[_NID].notna()].drop(columns=[ENTITY])
    if BAD_VALUES in frame.columns:
        quality.bad_values += int(frame.pop(BAD_VALUES).sum())
    for name, _column, _rollup in spec.measures:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")  # not a number: missing, counted later
    aggs: dict[str, tuple[str, str]] = {n: (n, _REAGG[r]) for n, _c, r in spec.measures}
    aggs.update({n: (n, "max") for n, _c in spec.dimensions})
    if spec.household_column is not None:
        aggs[HOUSEHOLD] = (HOUSEHOLD, "max")
    before = len(frame)
    frame = _merge_repeated(frame, aggs, keys=(_NID, *keys))
    quality.duplicate_ids += before - len(frame)
    return frame


def finish_measures(
    frame: pd.DataFrame,
    spec: RollupSpec,
    dataset: DatasetSpec,
    quality: QualityCounters,
    *,
    decimals: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Measures in their unit: missing ones counted and 0, stored fractions (`scale`) divided out.

    `decimals` names measures held as whole multiples of 10**-d (a snapshot's exact form of NUMERIC
    money): divided first, which gives the same float as the database's own decimal sum.
    """
    for name, _column, rollup in spec.measures:
        # Decimal money (NUMERIC(12,2)) arrives as Decimal and becomes float here; rounding to whole
        # yuan happens once, at clipping, after the re-aggregation.
        values = pd.to_numeric(frame[name], errors="coerce")
        quality.bad_values += int(values.isna().sum())
        if decimals and decimals.get(name):
            values = values / 10 ** decimals[name]
        measure = dataset.measure(name)
        if measure is not None and measure.scale and rollup is not Rollup.COUNT:
            values = values / 10**measure.scale  # e.g. fen stored as integers -> yuan
        frame[name] = values.fillna(0)
    return frame
