"""Connector configuration: one YAML or TOML file per connector, validated at start.

A wrong configuration fails at start with a `ConfigError` that names the file, the key and what is
expected. Table and column names come only from here and must be plain identifiers; nothing from a
request is ever formatted into SQL. Public domains of dimensions are loaded from published code-list
files, never from the data.
"""

from __future__ import annotations

import base64
import csv
import re
import tomllib
import zoneinfo
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.errors import ConfigError
from connectors.protocol import is_weak_public_key

# The shared vocabulary has its home in the leaf `connectors.vocabulary`; a configuration uses it.
from connectors.vocabulary import EntityKind, Rollup, Unit

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Name = Annotated[str, Field(pattern=NAME.pattern, description="lower-case name: letters, digits, _")]
SqlIdentifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, description="a plain SQL identifier")]


class DerivedDimension(StrEnum):
    """Coarse attributes computed from a resident ID; the birth date itself never leaves."""

    BIRTH_YEAR_BAND = "birth_year_band"
    SEX = "sex"
    REGION_CODE = "region_code"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntitySpec(_Strict):
    column: SqlIdentifier
    kind: EntityKind


class PeriodFormat(StrEnum):
    """How a period column holds its month (see `connectors.sources.periods`)."""

    DATE = "date"
    TIMESTAMP = "timestamp"
    YYYYMM = "yyyymm"
    TEXT_YYYY_MM = "text_yyyy_mm"
    TEXT_YYYYMM = "text_yyyymm"
    TEXT_YYYY_MM_DD = "text_yyyy_mm_dd"
    YEAR_MONTH = "year_month"


class PeriodSpec(_Strict):
    column: SqlIdentifier = Field(description="the period column; with a year and month pair, the year")
    grain: Literal["month"] = "month"
    format: PeriodFormat | None = Field(
        None,
        description="how the column holds the month; by default taken from the column type (text: YYYY-MM)",
    )
    month_column: SqlIdentifier | None = Field(None, description="the month (1-12) of a year and month pair")
    timezone: str = Field(
        "Asia/Shanghai", description="the zone whose month boundaries apply to TIMESTAMP WITH TIME ZONE"
    )

    @model_validator(mode="after")
    def _check(self) -> PeriodSpec:
        pair = self.month_column is not None
        if self.format is PeriodFormat.YEAR_MONTH and not pair:
            raise ValueError("format year_month needs month_column (period.column then holds the year)")
        if pair and self.format not in (None, PeriodFormat.YEAR_MONTH):
            raise ValueError(f"month_column makes a year and month pair: format {self.format} does not apply")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA zone such as Asia/Shanghai"
            ) from None
        return self


class MeasureSpec(_Strict):
    name: Name
    column: SqlIdentifier | None = Field(None, description="source column; omitted only for rollup=count")
    rollup: Rollup
    unit: str = Field("yuan", max_length=32)
    bounds: tuple[int, int] = Field(description="public clip bounds per entity over the requested periods")
    scale: int = Field(
        0,
        ge=0,
        le=6,
        description="decimal places stored as integers: 2 for fen in a yuan measure; rolled-up values are"
        " divided by 10**scale before clipping",
    )
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> MeasureSpec:
        lower, upper = self.bounds
        if lower > upper:
            raise ValueError(f"bounds [{lower}, {upper}]: lower bound must not exceed upper bound")
        if self.rollup is not Rollup.COUNT and self.column is None:
            raise ValueError(f"measure {self.name!r} with rollup {self.rollup.value} needs a column")
        return self


class DimensionSpec(_Strict):
    name: Name
    column: SqlIdentifier | None = None
    codelist: Path | None = Field(None, description="CSV code list (first column: code) = the public domain")
    derived: DerivedDimension | None = None
    household_level: bool = Field(
        False,
        description="constant within a household (village, urban-rural code): usable in household queries",
    )
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> DimensionSpec:
        if self.derived is not None:
            if self.column is not None:
                raise ValueError(f"dimension {self.name!r}: a derived dimension takes no column")
            if (self.derived is DerivedDimension.REGION_CODE) != (self.codelist is not None):
                raise ValueError(
                    f"dimension {self.name!r}: region_code needs a codelist (the public list of region"
                    " codes); birth_year_band and sex take none"
                )
        elif self.column is None or self.codelist is None:
            raise ValueError(f"dimension {self.name!r}: give both column and codelist, or derived")
        return self


class HouseholdSpec(_Strict):
    """The register's person -> household mapping (exactly one household per person)."""

    column: SqlIdentifier


class DatasetSpec(_Strict):
    name: Name
    description: str = ""
    table: SqlIdentifier | None = Field(None, description="table name, for SQL sources")
    file: str | None = Field(None, description="file name under the source directory, for file sources")
    entity: EntitySpec
    period: PeriodSpec | None = Field(None, description="omitted for snapshot tables")
    measures: tuple[MeasureSpec, ...] = ()
    dimensions: tuple[DimensionSpec, ...] = ()
    household: HouseholdSpec | None = None
    watermark: SqlIdentifier | None = Field(
        None,
        description="a column whose maximum grows whenever rows are added or changed (a load batch number,"
        " updated_at): the connector's snapshot is rebuilt when it or the row count changes. File sources"
        " are checked by checksum without one",
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if (self.table is None) == (self.file is None):
            raise ValueError(f"dataset {self.name!r}: give exactly one of table (SQL) or file (CSV/Parquet)")
        if self.file is not None and not re.fullmatch(
            r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(csv|parquet)", self.file
        ):
            raise ValueError(f"dataset {self.name!r}: file must be a plain name ending in .csv or .parquet")
        names = [m.name for m in self.measures] + [d.name for d in self.dimensions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset {self.name!r}: names used twice: {', '.join(dupes)}")
        for d in self.dimensions:
            if d.derived is not None and self.entity.kind is not EntityKind.PERSON:
                raise ValueError(f"dimension {d.name!r}: ID-derived dimensions need a person entity")
        if self.household is not None and self.entity.kind is not EntityKind.PERSON:
            raise ValueError(f"dataset {self.name!r}: a household mapping needs a person entity")
        return self

    def measure(self, name: str) -> MeasureSpec | None:
        return next((m for m in self.measures if m.name == name), None)

    def dimension(self, name: str) -> DimensionSpec | None:
        return next((d for d in self.dimensions if d.name == name), None)


class SourceSpec(_Strict):
    url: str = Field(description="SQLAlchemy URL (sqlite, postgresql+psycopg, mysql+pymysql) or a directory")
    kind: Literal["sql", "files"] = "sql"
    chunk_rows: int = Field(50_000, ge=1_000, le=5_000_000)
    snapshots: bool = Field(
        True,
        description="keep a per-entity monthly roll-up of each dataset in the state directory and answer"
        " extracts from it; false reads the source for every extract",
    )
    snapshot_check_seconds: int = Field(
        60,
        ge=0,
        le=86_400,
        description="how often an extract asks the source whether it changed (watermark or checksum);"
        " 0 asks every time",
    )
    snapshot_max_age_seconds: int = Field(
        86_400,
        ge=60,
        le=31 * 86_400,
        description="a snapshot older than this is rebuilt even if no change was seen (sources without a"
        " watermark); `fedgate connector refresh` rebuilds at once",
    )


def _check_public_key(value: str) -> str:
    if not value.startswith("ed25519:"):
        raise ValueError("expected 'ed25519:' followed by the base64 of a 32-byte Ed25519 public key")
    try:
        raw = base64.b64decode(value.removeprefix("ed25519:"), validate=True)
    except ValueError:
        raise ValueError("the key after 'ed25519:' is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one has {len(raw)}")
    if is_weak_public_key(raw):
        raise ValueError(
            "this is a small-order point (e.g. all zeros): forged signatures would verify under it"
        )
    return value


class PolicySpec(_Strict):
    allowed_units: tuple[Unit, ...] = (Unit.PERSON, Unit.HOUSEHOLD)
    max_epsilon_per_query: Decimal = Field(gt=0)
    max_epsilon_per_window: Decimal = Field(gt=0)
    budget_window: Literal["calendar_year"] = "calendar_year"
    gateway_public_keys: tuple[str, ...] = Field(
        min_length=1,
        max_length=2,
        description="trusted gateway keys: the current one and during rotation the previous",
    )
    approval_public_key: str = Field(description="the department's own approval key")
    admin_key_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the department admin key"
    )
    audit_public_keys: tuple[str, ...] = Field(
        (),
        max_length=2,
        description="the gateway's audit note keys (name+keyid+base64), the current one and during rotation "
        "the next: every extract must carry a checkpoint that extends the last one this connector witnessed "
        "and includes the request's own entry; required unless unsafe_development is set",
    )
    max_clock_skew_seconds: int = Field(60, ge=5, le=600)
    accept_any_analyst_rules: bool = Field(
        False,
        description='serve under standing rules whose analyst list is "*": such a rule admits any query the '
        "gateway chooses inside its limits, since no analyst's signature is needed (docs/security.md, threat "
        "model); off by default, so a rule must name analysts by their key fingerprint",
    )

    @field_validator("approval_public_key")
    @classmethod
    def _check_approval_key(cls, value: str) -> str:
        return _check_public_key(value)

    @field_validator("gateway_public_keys")
    @classmethod
    def _check_gateway_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_public_key(v) for v in value)

    @field_validator("audit_public_keys")
    @classmethod
    def _check_audit_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from audit.checkpoint import parse_verifier
        from audit.errors import CheckpointError

        for key in value:
            try:
                parse_verifier(key)
            except CheckpointError as exc:
                raise ValueError(f"{exc} (give the verifier key `fedgate audit keygen` printed)") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> PolicySpec:
        if self.max_epsilon_per_query > self.max_epsilon_per_window:
            raise ValueError("max_epsilon_per_query must not exceed max_epsilon_per_window")
        return self


class ListenSpec(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    public_url: str | None = Field(None, description="the URL the gateway signs, when behind a proxy")
    max_body_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest request body served (413 above it, before the signature is checked)",
    )


class ConnectorConfig(_Strict):
    name: Name = Field(description="connector id, unique in the federation")
    department: Name
    description: str = ""
    source: SourceSpec
    datasets: tuple[DatasetSpec, ...] = Field(min_length=1)
    policy: PolicySpec
    signing_key_file: Path = Field(description="the connector's Ed25519 private key (PEM)")
    federation_keyring_file: Path | None = Field(
        None, description="federation keyring; else FEDGATE_FEDERATION_KEYRING(_FILE)"
    )
    state_dir: Path = Field(description="nonces, served extracts, budget and the local log")
    listen: ListenSpec = ListenSpec()
    unsafe_development: bool = Field(
        False,
        description="development on loopback only: allows a connector that does not witness the gateway's "
        "audit log and has no https listen.public_url; logged as a warning at every start",
    )

    @model_validator(mode="after")
    def _check(self) -> ConnectorConfig:
        if not self.unsafe_development:
            if not self.policy.audit_public_keys:
                raise ValueError(
                    "policy.audit_public_keys is required: a connector witnesses the gateway's audit log "
                    "(pin the verifier key of the gateway's FEDGATE_AUDIT_KEY_FILE; "
                    "unsafe_development: true only for local work)"
                )
            url = self.listen.public_url
            if url is None or not url.startswith("https://"):
                raise ValueError(
                    "listen.public_url must be the https URL the gateway calls (the mutual-TLS proxy); "
                    "without it the signed URL would depend on the Host header "
                    "(unsafe_development: true only for local work)"
                )
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset names used twice: {', '.join(dupes)}")
        want = "files" if self.source.kind == "files" else "sql"
        for d in self.datasets:
            if (want == "files") != (d.file is not None):
                field = "file" if want == "files" else "table"
                raise ValueError(f"dataset {d.name!r}: a {want} source needs '{field}'")
        return self

    def dataset(self, name: str) -> DatasetSpec | None:
        return next((d for d in self.datasets if d.name == name), None)


class LoadedConfig(BaseModel):
    """A validated configuration with its paths resolved and its public domains loaded."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    config: ConnectorConfig
    domains: dict[tuple[str, str], tuple[str, ...]]
    """(dataset, dimension) -> the public domain of codes, in code-list order."""
    names: dict[tuple[str, str], dict[str, str]] = {}
    """(dataset, dimension) -> code -> name, where the code list has a second column of names."""


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return doc


def _explain(path: Path, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{path}: {key}: {err['msg']}")
    return ConfigError("invalid connector configuration:\n  " + "\n  ".join(lines))


def read_codelist(path: Path) -> tuple[str, ...]:
    """Codes from a published code list: a CSV file whose first column, headed `code`, holds the codes."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the code list ({exc.strerror})") from None
    if not rows or not rows[0] or rows[0][0].strip().lower() != "code":
        raise ConfigError(f"{path}: a code list is a CSV file whose first column is headed 'code'")
    codes = tuple(r[0].strip() for r in rows[1:] if r and r[0].strip())
    if not codes:
        raise ConfigError(f"{path}: the code list is empty")
    if len(set(codes)) != len(codes):
        raise ConfigError(f"{path}: the code list repeats a code")
    return codes


NAME_COLUMNS = ("name", "label")
"""Headers of a code list's second column that hold the codes' names (村名, 城乡分类名称 ...)."""


def read_codelist_names(path: Path) -> dict[str, str]:
    """Code -> name from a code list whose second column is headed `name` or `label`; empty otherwise.

    Names are as public as the codes (the same published list) and only ever shown beside them."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the code list ({exc.strerror})") from None
    if not rows or len(rows[0]) < 2 or rows[0][1].strip().lower() not in NAME_COLUMNS:
        return {}
    return {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2 and r[0].strip() and r[1].strip()}


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p)


def load_config(path: str | Path) -> LoadedConfig:
    """Read, validate and resolve one connector configuration file."""
    from connectors.ids import BIRTH_YEAR_BANDS, SEX_CODES

    path = Path(path).resolve()
    doc = _read_document(path)
    try:
        cfg = ConnectorConfig.model_validate(doc)
    except ValidationError as exc:
        raise _explain(path, exc) from None
    base = path.parent
    source = cfg.source
    if source.kind == "files":
        source = source.model_copy(update={"url": str(_resolve(base, Path(source.url)))})
    elif source.url.startswith("sqlite:///") and not source.url.startswith("sqlite:////"):
        source = source.model_copy(
            update={"url": "sqlite:///" + str(base / source.url.removeprefix("sqlite:///"))}
        )
    datasets = []
    domains: dict[tuple[str, str], tuple[str, ...]] = {}
    names: dict[tuple[str, str], dict[str, str]] = {}
    for ds in cfg.datasets:
        dims = []
        for dim in ds.dimensions:
            if dim.codelist is not None:
                resolved = _resolve(base, dim.codelist)
                domains[(ds.name, dim.name)] = read_codelist(resolved)
                names[(ds.name, dim.name)] = read_codelist_names(resolved)
                dim = dim.model_copy(update={"codelist": resolved})
            elif dim.derived is DerivedDimension.BIRTH_YEAR_BAND:
                domains[(ds.name, dim.name)] = BIRTH_YEAR_BANDS
            elif dim.derived is DerivedDimension.SEX:
                domains[(ds.name, dim.name)] = SEX_CODES
            dims.append(dim)
        datasets.append(ds.model_copy(update={"dimensions": tuple(dims)}))
    keyring = cfg.federation_keyring_file
    cfg = cfg.model_copy(
        update={
            "source": source,
            "datasets": tuple(datasets),
            "signing_key_file": _resolve(base, cfg.signing_key_file),
            "federation_keyring_file": _resolve(base, keyring) if keyring is not None else None,
            "state_dir": _resolve(base, cfg.state_dir),
        }
    )
    return LoadedConfig(path=path, config=cfg, domains=domains, names=names)


def read_signing_key(loaded: LoadedConfig) -> bytes:
    """The connector's private key (PEM) from `signing_key_file`, or a one-line `ConfigError` why not."""
    from connectors.protocol import SignatureError, load_private_key

    path = loaded.config.signing_key_file
    where = f"{loaded.path}: signing_key_file: {path}"
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    if b"PUBLIC KEY" in pem or pem.strip().startswith(b"ed25519:"):
        raise ConfigError(
            f"{where} holds a public key; it must hold the connector's Ed25519 private key (PEM, 0600),"
            " whose public key the gateway pins"
        )
    try:
        load_private_key(pem)
    except (ValueError, TypeError, SignatureError) as exc:
        raise ConfigError(
            f"{where} is not an unencrypted Ed25519 private key in PEM ({type(exc).__name__})"
        ) from None
    return pem
