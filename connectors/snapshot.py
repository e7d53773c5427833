"""Connector snapshots: each dataset's per-entity monthly roll-up, kept inside the department.

    build:   the source's roll-up by ID and raw period value (one pass) -> the value's month
             -> normalise IDs -> re-aggregate by (ID, month) -> Parquet
    extract: the requested months of the snapshot -> re-aggregate by ID
             = what one source roll-up over those months gives (sums, counts and maxima compose by month)

The seed document asks for a base database "updated monthly": the source is read when it changed (its
watermark column's maximum and row count, or a file's checksum, looked at every `snapshot_check_seconds`),
when the snapshot is older than `snapshot_max_age_seconds`, or when the department's own scheduler runs
`fedgate connector refresh`; otherwise every extract is served from the snapshot.

Files, readable by the connector's owner only (directories 0700, files 0600), under
`<state_dir>/snapshots/<dataset>/`:

    <id>.parquet   one row per normalised ID and month (NUMERIC money as exact multiples of 10**-d)
    current.json   the manifest of the snapshot in use, replaced atomically (os.replace)

A reader loads the manifest and then that Parquet file once, and holds the loaded `Snapshot` for a
whole extract (both periods of a baseline): a refresh never mixes two snapshots in one answer. The
previous snapshot's file is kept until the next refresh, so a reader in another process that read the
manifest just before a replace still finds its file. Build counts (rows skipped for invalid IDs or
values) are the department's own and stay in the manifest, the quality report and `connector check`.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from connectors.config import DatasetSpec, LoadedConfig
from connectors.extract import _NID, QualityCounters, finish_measures, normalise_rollup
from connectors.ids import IdKind, normalize_many
from connectors.sources import ENTITY, HOUSEHOLD, PERIOD, PERIOD_MONTH, RollupSpec, Source
from connectors.sources.periods import PeriodPlan, month_key
from connectors.vocabulary import EntityKind, Rollup

__all__ = ["SNAPSHOT_DIR", "Snapshot", "SnapshotInfo", "SnapshotStore", "read_manifest", "snapshot_summary"]

log = structlog.get_logger("fedgate.connector.snapshot")

SNAPSHOT_DIR = "snapshots"
MANIFEST = "current.json"
_MONTH = "_month"
_NO_PERIOD = ""
"""The one month key of a dataset without a period column (a register): every extract reads it."""
_MAX_DECIMALS = 6
_DIR_MODE = 0o700
_FILE_MODE = 0o600


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot's manifest: what it holds and how it was built (the department's own view)."""

    id: str
    dataset: str
    built_at: float
    spec_digest: str
    """the dataset configuration it was built for: another configuration rebuilds"""
    fingerprint: str | None
    """what the source reported when the build started (watermark and rows, or checksum)"""
    months: tuple[str, ...]
    decimals: dict[str, int]
    """measures stored as whole multiples of 10**-d (NUMERIC money, kept exact)"""
    rows: int
    build_seconds: float
    quality: dict[str, Any]

    @property
    def data_as_of(self) -> str:
        """The day the data was taken from the source (UTC): public, unlike any count."""
        return datetime.datetime.fromtimestamp(self.built_at, tz=datetime.UTC).date().isoformat()

    def age_seconds(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.built_at)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SnapshotInfo:
        doc = json.loads(text)
        doc["months"] = tuple(doc["months"])
        return cls(**doc)


def snapshot_summary(info: SnapshotInfo, now: float | None = None) -> dict[str, Any]:
    """A snapshot as the department's admin sees it (quality report, `connector check`)."""
    return {
        "snapshot": info.id,
        "data_as_of": info.data_as_of,
        "age_seconds": round(info.age_seconds(now)),
        "months": [info.months[0], info.months[-1]] if info.months and info.months[0] else [],
        "rows": info.rows,
        "build_seconds": info.build_seconds,
        "skipped_at_build": {
            "invalid_ids": info.quality.get("invalid_ids", 0),
            "bad_values": info.quality.get("bad_values", 0),
        },
        "fingerprint": info.fingerprint,
    }


def spec_digest(dataset: DatasetSpec) -> str:
    return hashlib.sha256(dataset.model_dump_json().encode()).hexdigest()[:16]


def full_spec(dataset: DatasetSpec, chunk_rows: int) -> RollupSpec:
    """The roll-up of every measure, column dimension and the household of a dataset, over all rows."""
    return RollupSpec(
        relation=dataset.table or dataset.file or "",
        entity_column=dataset.entity.column,
        measures=tuple((m.name, m.column, m.rollup) for m in dataset.measures),
        dimensions=tuple((d.name, d.column) for d in dataset.dimensions if d.column is not None),
        household_column=dataset.household.column if dataset.household else None,
        chunk_rows=chunk_rows,
    )


def _exact_decimals(values: pd.Series) -> tuple[pd.Series, int]:
    """NUMERIC money (Decimal objects) as whole multiples of 10**-d, so sums over months stay exact."""
    present = [v for v in values.tolist() if isinstance(v, decimal.Decimal) and v.is_finite()]
    if not present:
        return values, 0
    places = max(-min(int(v.as_tuple().exponent), 0) for v in present)
    places = min(places, _MAX_DECIMALS)
    scaled = [
        float(int(v.scaleb(places))) if isinstance(v, decimal.Decimal) and v.is_finite() else v
        for v in values.tolist()
    ]
    return pd.Series(scaled, index=values.index, dtype="object"), places


def _read_all(source: Source, spec: RollupSpec) -> pd.DataFrame:
    chunks = list(source.rollup(spec))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=list(spec.output_columns))


def _month_keys(plan: PeriodPlan, frame: pd.DataFrame) -> pd.Series:
    """Each row's month from its raw period value(s), computed once per distinct value."""
    if not len(frame):
        return pd.Series([], dtype=object, index=frame.index)
    if plan.month_column is not None:
        pairs = pd.MultiIndex.from_arrays([frame[PERIOD], frame[PERIOD_MONTH]])
        codes, uniques = pd.factorize(pairs)
        keys = [month_key(plan, year, month) for year, month in uniques.tolist()]
    else:
        codes, uniques = pd.factorize(frame[PERIOD])
        keys = [month_key(plan, value) for value in uniques.tolist()]
    return pd.Series(pd.array(keys, dtype=object)[codes], index=frame.index, dtype=object)


def _normalise_once(frame: pd.DataFrame, dataset: DatasetSpec) -> QualityCounters:
    """Replace each raw ID by its normalised form (empty if invalid), normalising each distinct raw ID
    once; returns the ID counts as one source roll-up over every month would give them."""
    counts = QualityCounters()
    texts = pd.Series([v if isinstance(v, str) else "" for v in frame[ENTITY].tolist()], dtype=object)
    codes, raws = pd.factorize(texts)
    kind = IdKind.RESIDENT_ID if dataset.entity.kind is EntityKind.PERSON else IdKind.CREDIT_CODE
    batch = normalize_many(kind, list(raws))
    valid = [v for v in batch.values if v is not None]
    counts.raw_ids = len(raws)
    counts.invalid_ids = batch.invalid
    counts.legacy_ids = batch.legacy
    counts.cleaned_ids = batch.cleaned
    counts.invalid_reasons.update(batch.reasons)
    counts.duplicate_ids = len(valid) - len(set(valid))
    canonical = pd.array([v if v is not None else "" for v in batch.values], dtype=object)
    # Canonical IDs take the fast path when `normalise_rollup` checks them again; "" stays invalid.
    frame[ENTITY] = canonical[codes] if len(frame) else frame[ENTITY]
    return counts


class Snapshot:
    """One loaded snapshot: immutable, shared by every extract that opened it."""

    def __init__(self, info: SnapshotInfo, frame: pd.DataFrame) -> None:
        self.info = info
        self._frame = frame
        self._month_codes = {m: i for i, m in enumerate(info.months)}

    @property
    def id(self) -> str:
        return self.info.id

    def rollup(self, spec: RollupSpec, dataset: DatasetSpec) -> pd.DataFrame:
        """The roll-up `spec` asks for, by normalised ID: the same frame the source path gives."""
        frame = self._frame
        if spec.period_start is not None and spec.period_end is not None and dataset.period is not None:
            # "YYYY-MM" strings order as months do.
            months = [m for m in self.info.months if spec.period_start <= m <= spec.period_end]
            codes = [self._month_codes[m] for m in months]
            frame = frame[frame[_MONTH].isin(codes)]
        aggs: dict[str, tuple[str, str]] = {}
        for name, _column, rollup in spec.measures:
            aggs[name] = (name, "max" if rollup is Rollup.MAX else "sum")
        aggs.update({name: (name, "max") for name, _c in spec.dimensions})
        if spec.household_column is not None:
            aggs[HOUSEHOLD] = (HOUSEHOLD, "max")
        if aggs:
            out = frame.groupby(_NID, sort=False, observed=True).agg(**aggs).reset_index()
        else:
            out = frame[[_NID]].drop_duplicates().reset_index(drop=True)
        out[_NID] = out[_NID].astype(object)
        for name, _c in spec.dimensions:
            out[name] = out[name].astype(object)
        if spec.household_column is not None:
            out[HOUSEHOLD] = out[HOUSEHOLD].astype(object)
        return finish_measures(out, spec, dataset, QualityCounters(), decimals=self.info.decimals)


class SnapshotStore:
    """The snapshots of one connector's datasets: built, checked, loaded and replaced here only."""

    def __init__(self, loaded: LoadedConfig, source: Source, state_dir: Path | None = None) -> None:
        self._loaded = loaded
        self._source = source
        self._root = Path(state_dir if state_dir is not None else loaded.config.state_dir) / SNAPSHOT_DIR
        self._loaded_snapshots: dict[str, Snapshot] = {}
        self._checked_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}

    # --- reading

    def open(self, dataset: DatasetSpec) -> Snapshot:
        """The snapshot an extract reads, built or rebuilt first if the source changed or it is stale."""
        snapshot = self._current(dataset)
        if snapshot is None or self._stale(dataset, snapshot.info):
            with self._build_lock(dataset.name):
                # Another thread may have rebuilt it while this one waited.
                snapshot = self._current(dataset)
                if snapshot is None or self._stale(dataset, snapshot.info, recheck=False):
                    snapshot = self._build(dataset)
        return snapshot

    def info(self, dataset: DatasetSpec) -> SnapshotInfo | None:
        """The manifest of the dataset's snapshot in use, or None before the first build."""
        return self._manifest(dataset.name)

    def refresh(self, dataset: DatasetSpec) -> Snapshot:
        """Rebuild the dataset's snapshot from the source now (`fedgate connector refresh`)."""
        with self._build_lock(dataset.name):
            return self._build(dataset)

    def _current(self, dataset: DatasetSpec) -> Snapshot | None:
        # Retried once: a refresh in another process may replace the manifest between reading it and
        # opening its file (the previous file is kept, so a second miss means two refreshes).
        for _attempt in range(3):
            info = self.info(dataset)
            if info is None or info.spec_digest != spec_digest(dataset):
                return None
            with self._lock:
                held = self._loaded_snapshots.get(dataset.name)
            if held is not None and held.id == info.id:
                return held
            try:
                frame = self._read(dataset.name, info)
            except FileNotFoundError:
                continue
            snapshot = Snapshot(info, frame)
            with self._lock:
                self._loaded_snapshots[dataset.name] = snapshot
            return snapshot
        return None

    def _stale(self, dataset: DatasetSpec, info: SnapshotInfo, *, recheck: bool = True) -> bool:
        source_cfg = self._loaded.config.source
        if info.age_seconds() > source_cfg.snapshot_max_age_seconds:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._checked_at.get(dataset.name)
            if recheck and last is not None and now - last < source_cfg.snapshot_check_seconds:
                return False
            self._checked_at[dataset.name] = now
        current = self._source.fingerprint(dataset)
        return current is not None and current != info.fingerprint

    def _read(self, name: str, info: SnapshotInfo) -> pd.DataFrame:
        # Opened once and read whole: the loaded frame is the reader's own, whatever replaces the file.
        table = pq.read_table(self._dir(name) / f"{info.id}.parquet")
        frame = table.to_pandas()
        frame[_NID] = frame[_NID].astype("category")
        frame[_MONTH] = frame[_MONTH].map({m: i for i, m in enumerate(info.months)}).astype("int32")
        return frame

    # --- building

    def _build_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._build_locks.setdefault(name, threading.Lock())

    def _dir(self, name: str) -> Path:
        return self._root / name

    def _build(self, dataset: DatasetSpec) -> Snapshot:
        started = time.perf_counter()
        built_at = time.time()
        chunk_rows = self._loaded.config.source.chunk_rows
        # Taken before reading: a change during the build shows as a change at the next check.
        fingerprint = self._source.fingerprint(dataset)
        relation = dataset.table or dataset.file or ""
        base = full_spec(dataset, chunk_rows)
        if dataset.period is not None:
            plan = self._source.period_plan(relation, dataset.period)  # verified before anything is read
            spec = dataclasses.replace(base, by_period=dataset.period)
            chunks = list(self._source.rollup(spec))
            frame = (
                pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=spec.output_columns)
            )
            frame[_MONTH] = _month_keys(plan, frame)
            frame = frame[frame[_MONTH].notna()].drop(columns=[c for c, _col in spec.period_keys])
        else:
            chunks = list(self._source.rollup(base))
            frame = (
                pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=base.output_columns)
            )
            frame[_MONTH] = _NO_PERIOD
        months = sorted(set(frame[_MONTH].tolist())) if len(frame) else []
        decimals: dict[str, int] = {}
        for name, _column, rollup in base.measures:
            if rollup is not Rollup.COUNT and frame[name].dtype == object:
                frame[name], places = _exact_decimals(frame[name])
                if places:
                    decimals[name] = places
        quality = _normalise_once(frame, dataset)
        per_month = QualityCounters()
        frame = normalise_rollup(frame, base, dataset, per_month, keys=(_MONTH,))
        quality.bad_values = per_month.bad_values
        for name, _column, _rollup in base.measures:
            quality.bad_values += int(frame[name].isna().sum())
        frame = frame.reset_index(drop=True)
        info = SnapshotInfo(
            id=_snapshot_id(built_at),
            dataset=dataset.name,
            built_at=built_at,
            spec_digest=spec_digest(dataset),
            fingerprint=fingerprint,
            months=tuple(months),
            decimals=decimals,
            rows=len(frame),
            build_seconds=round(time.perf_counter() - started, 3),
            quality=quality.as_dict(),
        )
        self._install(dataset.name, info, frame, base)
        snapshot = Snapshot(info, self._in_memory(frame, info))
        with self._lock:
            self._loaded_snapshots[dataset.name] = snapshot
            self._checked_at[dataset.name] = time.monotonic()
        log.info(
            "connector.snapshot_built",
            dataset=dataset.name,
            snapshot=info.id,
            data_as_of=info.data_as_of,
            seconds=info.build_seconds,
        )
        return snapshot

    def _in_memory(self, frame: pd.DataFrame, info: SnapshotInfo) -> pd.DataFrame:
        out = frame.copy()
        out[_NID] = out[_NID].astype("category")
        out[_MONTH] = out[_MONTH].map({m: i for i, m in enumerate(info.months)}).astype("int32")
        return out

    def _install(self, name: str, info: SnapshotInfo, frame: pd.DataFrame, spec: RollupSpec) -> None:
        """Write the Parquet file, then replace the manifest: readers see the old or the new, whole."""
        directory = self._dir(name)
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        for d in (self._root.parent, self._root, directory):
            if d.exists():
                os.chmod(d, _DIR_MODE)
        previous = self._manifest(name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        target = directory / f"{info.id}.parquet"
        _write_private(target, lambda path: pq.write_table(table, path))
        _write_private(directory / MANIFEST, lambda path: path.write_text(info.to_json()))
        keep = {f"{info.id}.parquet", MANIFEST}
        if previous is not None:
            keep.add(f"{previous.id}.parquet")
        for old in directory.iterdir():
            if old.name not in keep and not old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)

    def _manifest(self, name: str) -> SnapshotInfo | None:
        return read_manifest(self._root.parent, name)


def read_manifest(state_dir: Path, dataset: str) -> SnapshotInfo | None:
    """The manifest of a dataset's snapshot in use under a state directory, None before the first build."""
    try:
        return SnapshotInfo.from_json((Path(state_dir) / SNAPSHOT_DIR / dataset / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def _snapshot_id(built_at: float) -> str:
    """Sortable by build time, unique across processes."""
    moment = datetime.datetime.fromtimestamp(built_at, tz=datetime.UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _write_private(target: Path, write: Any) -> None:
    """Write through a 0600 temporary file in the same directory, then rename it over `target`."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
