"""A small, fully known department for connector tests, written to any of the five source kinds.

The rows hold one person under a clean, a legacy 15-digit and a sloppy form of the same number,
a person whose sum exceeds the public bound, invalid numbers, an out-of-domain code and a row outside
the period, so every rule of the extract has something to bite on.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import sqlalchemy as sa
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.federation_keys import generate_keyring, load_keyring, write_keyring
from connectors.ids import IdKind, make_resident_id, normalize, to_legacy_15
from connectors.protocol import (
    PROTOCOL_VERSION,
    Approval,
    ApprovedDataset,
    ExtractRequest,
    SignedApproval,
    TokenSpec,
    fingerprint,
    private_key_pem,
    public_key_text,
    sign_approval,
    sign_query,
    sign_request,
)
from connectors.query import (
    Baseline,
    Filter,
    Measure,
    QuerySpec,
    Statistic,
    StatisticKind,
    Term,
)
from connectors.vocabulary import Unit


def _id_with_x() -> str:
    for seq in range(500):
        rid = make_resident_id("330922", datetime.date(1975, 3, 14), seq, male=True)
        if rid.endswith("X"):
            return rid
    raise AssertionError("no sequence gives an X check digit")


PERSON_A = _id_with_x()  # appears clean, legacy and sloppy
PERSON_B = make_resident_id("330921", datetime.date(1988, 11, 2), 17, male=False)  # above the bound
PERSON_C = make_resident_id("330922", datetime.date(2001, 6, 30), 42, male=True)  # out-of-domain district
INVALID = ["33092219750314001Y", "330922198811021", "12345", "330922199902300012"]
DISTRICTS = ("A", "B")
WAGE_BOUNDS = (0, 100_000)


def wage_rows() -> list[dict[str, Any]]:
    a_legacy = to_legacy_15(PERSON_A)
    a_sloppy = f"  {PERSON_A[:-1]}x "
    rows: list[dict[str, Any]] = []
    rows += [{"pid": PERSON_A, "month": f"2025-0{m}", "amount": 10_000, "district": "A"} for m in (1, 2, 3)]
    rows += [{"pid": a_legacy, "month": "2025-04", "amount": 10_000, "district": "A"}]
    rows += [{"pid": a_sloppy, "month": "2025-05", "amount": 10_000, "district": "A"}]
    rows += [
        {"pid": PERSON_B, "month": f"2025-{m:02d}", "amount": 50_000, "district": "B"} for m in range(1, 13)
    ]
    rows += [{"pid": PERSON_C, "month": "2025-06", "amount": 7_000, "district": "Z"}]
    rows += [{"pid": PERSON_C, "month": "2024-12", "amount": 99_999, "district": "B"}]  # outside the period
    rows += [{"pid": bad, "month": "2025-02", "amount": 1_000, "district": "A"} for bad in INVALID]
    return rows


EXPECTED = {  # normalised ID -> (wage_income clipped, months_paid) over 2025-01..2025-12
    normalize(IdKind.RESIDENT_ID, PERSON_A): (50_000, 5),
    PERSON_B: (100_000, 12),
    PERSON_C: (7_000, 1),
}
RAW_FORMS = [PERSON_A, to_legacy_15(PERSON_A), PERSON_A[:-1] + "x", PERSON_B, PERSON_C, *INVALID[:2]]


def write_source(
    kind: str, directory: Path, db_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the wage rows to one source kind; returns (source config, dataset location config)."""
    frame = pd.DataFrame(wage_rows())
    if kind in ("sqlite", "postgres", "mariadb"):
        url = db_url if kind != "sqlite" else f"sqlite:///{directory / 'tax.db'}"
        assert url is not None
        engine = sa.create_engine(url)
        dtype = {
            "pid": sa.String(32),
            "month": sa.String(7),
            "district": sa.String(4),
            "amount": sa.BigInteger(),
        }
        frame.to_sql("wages", engine, if_exists="replace", index=False, dtype=dtype)  # type: ignore[arg-type]
        engine.dispose()
        return {"url": url}, {"table": "wages"}
    data_dir = directory / "files"
    data_dir.mkdir(exist_ok=True)
    if kind == "parquet":
        frame.to_parquet(data_dir / "wages.parquet", index=False)
        return {"url": str(data_dir), "kind": "files"}, {"file": "wages.parquet"}
    frame.to_csv(data_dir / "wages.csv", index=False)
    return {"url": str(data_dir), "kind": "files"}, {"file": "wages.csv"}


@dataclass
class Department:
    """Everything a test needs to act as the gateway and as the department's admin."""

    directory: Path
    name: str
    config_path: Path
    gateway_key: Ed25519PrivateKey
    approval_key: Ed25519PrivateKey
    admin_key: str
    keyring_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    # One issue time for every approval this department signs, so that two identical requests are
    # the same bytes (an identical retry).
    issued_at: int = field(default_factory=lambda: int(time.time()))
    ids: dict[str, str] = field(default_factory=dict)
    """label -> query id of the last request made under that label (ids are digests of the query)"""

    def qid(self, label: str) -> str:
        """The query id of the last request labelled `label` (or the label itself before any)."""
        return self.ids.get(label, label)

    def query(
        self,
        label: str,
        *,
        dataset: str = "wages",
        unit: str = "person",
        measures: tuple[str, ...] = ("wage_income", "months_paid"),
        dimensions: tuple[str, ...] = ("district", "sex", "birth_year_band"),
        period: tuple[str, str] = ("2025-01", "2025-12"),
        baseline: tuple[str, str] | None = None,
        epsilon: str | Decimal = "0.5",
    ) -> QuerySpec:
        """A query (told apart by `label`) whose plan asks exactly these fields of the dataset."""
        ref = f"{self.name}.{dataset}"
        measure = (
            Measure(terms=tuple(Term(dataset=ref, measure=m) for m in measures), lower=0, upper=10_000_000)
            if measures
            else None
        )
        person = unit == "person"
        return QuerySpec(
            purpose=f"connector test {label}: what the department serves",
            unit=Unit(unit),
            period_start=period[0],
            period_end=period[1],
            measure=measure,
            group_by=tuple(f"{ref}.{d}" for d in dimensions[:3]),
            filters=tuple(Filter(dimension=f"{ref}.{d}", values=("A",)) for d in dimensions[3:]),
            statistics=(Statistic(kind=StatisticKind.SUM if measure else StatisticKind.COUNT),),
            epsilon=Decimal(str(epsilon)),
            member_cap=1 if person else None,
            baseline=None
            if baseline is None
            else Baseline(period_start=baseline[0], period_end=baseline[1], drop_share=Decimal("0.3")),
            coverage=(ref,) if person and not measures and not dimensions else (),
        )

    def approval(
        self,
        query_id: str,
        *,
        digest: str | None = None,
        epsilon: str = "0.5",
        measures: tuple[str, ...] = ("wage_income", "months_paid"),
        dimensions: tuple[str, ...] = ("district", "sex", "birth_year_band"),
        dataset: str = "wages",
        key: Ed25519PrivateKey | None = None,
        unit: str = "person",
        household: bool = False,
        query: QuerySpec | None = None,
        period: tuple[str, str] = ("2025-01", "2025-12"),
        baseline: tuple[str, str] | None = None,
    ) -> SignedApproval:
        """The department's approval of the query labelled `query_id` (the default request's query unless
        `query` is given), covering the fields named here."""
        spec = query or self.query(query_id, unit=unit, epsilon=epsilon)
        approval = Approval(
            department=self.name,
            query_id=spec.query_id,
            query_digest=digest or spec.digest,
            unit=unit,  # type: ignore[arg-type]
            period_start=period[0],
            period_end=period[1],
            baseline_start=None if baseline is None else baseline[0],
            baseline_end=None if baseline is None else baseline[1],
            datasets=(
                ApprovedDataset(
                    dataset=dataset, measures=measures, dimensions=dimensions, household=household
                ),
            ),
            epsilon=Decimal(epsilon),
            issued_at=self.issued_at,
        )
        return sign_approval(key or self.approval_key, approval)

    def request(self, label: str, **changes: Any) -> ExtractRequest:
        """An extract request for the query labelled `label`: the carried query is planned from the
        request's own fields, so the connector's plan asks exactly them (override `query` to test that).
        With `analyst` (a private key) the query names that key and the request carries its signature."""
        approval = changes.pop("approval", None)
        analyst: Ed25519PrivateKey | None = changes.pop("analyst", None)
        fields: dict[str, Any] = {
            "connector": self.name,
            "dataset": "wages",
            "unit": "person",
            "period_start": "2025-01",
            "period_end": "2025-12",
            "measures": ("wage_income", "months_paid"),
            "dimensions": ("district", "sex", "birth_year_band"),
            "token": TokenSpec(epoch=load_keyring(self.keyring_path).current_epoch),
        }
        fields.update(changes)
        fields.setdefault("epsilon", approval.approval.epsilon if approval is not None else Decimal("0.5"))
        baseline = (
            None
            if fields.get("baseline_start") is None
            else (fields["baseline_start"], fields["baseline_end"])
        )
        period = (fields["period_start"], fields["period_end"])
        spec = fields.pop("query", None) or self.query(
            label,
            dataset=fields["dataset"],
            unit=str(fields["unit"]),
            measures=tuple(fields["measures"]),
            dimensions=tuple(fields["dimensions"]),
            period=period,
            baseline=baseline,
            epsilon=fields["epsilon"],
        )
        if analyst is not None and spec.analyst_key is None:
            spec = spec.model_copy(update={"analyst_key": fingerprint(analyst.public_key())})
        if analyst is not None:
            fields.setdefault("analyst_key", public_key_text(analyst.public_key()))
            fields.setdefault("analyst_signature", sign_query(analyst, spec.query_id, spec.digest))
        fields.setdefault("query_id", spec.query_id)
        fields.setdefault("query_digest", spec.digest)
        self.ids[label] = fields["query_id"]
        if approval is None and "rule" not in changes:
            approval = self.approval(
                label,
                query=spec,
                epsilon=str(fields["epsilon"]),
                unit=str(fields["unit"]),
                dataset=fields["dataset"],
                measures=tuple(fields["measures"]),
                dimensions=tuple(fields["dimensions"]),
                household=bool(fields.get("household", False)),
                period=period,
                baseline=baseline,
            )
        if approval is not None:
            fields["approval"] = approval
        return ExtractRequest(query=spec, **fields)


def make_department(
    directory: Path,
    kind: str,
    *,
    name: str = "tax",
    db_url: str | None = None,
    keyring_doc: dict[str, object] | None = None,
    gateway_key: Ed25519PrivateKey | None = None,
    epsilon_window: str = "3.0",
    accept_any_analyst_rules: bool = False,
) -> Department:
    directory.mkdir(parents=True, exist_ok=True)
    source, location = write_source(kind, directory, db_url)
    gateway_key = gateway_key or Ed25519PrivateKey.generate()
    approval_key = Ed25519PrivateKey.generate()
    connector_key = Ed25519PrivateKey.generate()
    (directory / "connector.key").write_bytes(private_key_pem(connector_key))
    keyring_path = directory / "keyring.json"
    write_keyring(keyring_doc or generate_keyring("test-county"), keyring_path)
    (directory / "districts.csv").write_text("code,label\nA,North\nB,South\n", encoding="utf-8")
    admin_key = secrets.token_urlsafe(24)
    config = {
        "name": name,
        "department": name,
        "description": "test department",
        "source": source,
        "signing_key_file": "connector.key",
        "federation_keyring_file": "keyring.json",
        "state_dir": "state",
        # Plain loopback HTTP; the witnessing tests add the audit key.
        "unsafe_development": True,
        "datasets": [
            {
                "name": "wages",
                **location,
                "entity": {"column": "pid", "kind": "person"},
                "period": {"column": "month"},
                "measures": [
                    {"name": "wage_income", "column": "amount", "rollup": "sum", "bounds": list(WAGE_BOUNDS)},
                    {"name": "months_paid", "rollup": "count", "unit": "months", "bounds": [0, 12]},
                ],
                "dimensions": [
                    {"name": "district", "column": "district", "codelist": "districts.csv"},
                    {"name": "sex", "derived": "sex"},
                    {"name": "birth_year_band", "derived": "birth_year_band"},
                ],
            }
        ],
        "policy": {
            "allowed_units": ["person", "household"],
            "max_epsilon_per_query": "1.0",
            "max_epsilon_per_window": epsilon_window,
            "gateway_public_keys": [public_key_text(gateway_key.public_key())],
            "approval_public_key": public_key_text(approval_key.public_key()),
            "admin_key_sha256": hashlib.sha256(admin_key.encode()).hexdigest(),
            "accept_any_analyst_rules": accept_any_analyst_rules,
        },
    }
    config_path = directory / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return Department(
        directory=directory,
        name=name,
        config_path=config_path,
        gateway_key=gateway_key,
        approval_key=approval_key,
        admin_key=admin_key,
        keyring_path=keyring_path,
    )


def signed_call(
    url: str,
    path: str,
    *,
    key: Ed25519PrivateKey,
    connector: str,
    body: bytes = b"",
    query_id: str = "-",
    method: str | None = None,
    timestamp: int | None = None,
    nonce: str | None = None,
    headers: dict[str, str] | None = None,
    sign_url: str | None = None,
    protocol: str = PROTOCOL_VERSION,
) -> httpx.Response:
    """Send one signed request, with knobs to forge every way a request can be wrong."""
    method = method or ("POST" if body else "GET")
    signed = sign_request(
        key,
        method=method,
        url=sign_url or url + path,
        connector=connector,
        query_id=query_id,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
        protocol=protocol,
    )
    sent = signed.as_headers() | {"content-type": "application/json"} | (headers or {})
    return httpx.request(method, url + path, content=body, headers=sent, timeout=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
