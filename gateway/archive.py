"""The archive of scheduled pack runs: their released figures, listed, and compared month on month.

    store(change, ...)     inside the transaction that marks the job succeeded, with `result.archived`
    list_archived(...)     newest first, without the figures
    archived(engine, id)   one run's document as the pack route returned it
    diff(engine, id)       each released figure against the same figure of the same pack's previous month

Everything here is post-processing of released, differentially private figures: a difference of two
releases is no new look at the data and costs no budget.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from aggregation.indicators.periods import previous_months
from connectors.protocol import canonical_json, sha256_hex
from gateway import db
from gateway.auth import Principal, Role
from gateway.errors import NotFound
from gateway.events import ResultArchived

if TYPE_CHECKING:
    from gateway.audit_trail import Change

__all__ = ["ArchivedRecord", "FigureChange", "archived", "diff", "list_archived", "store"]


@dataclass(frozen=True)
class ArchivedRecord:
    id: str
    pack: str
    period: str
    job_id: str
    schedule_id: str | None
    created_at: datetime
    doc: dict[str, Any] | None = None


@dataclass(frozen=True)
class FigureChange:
    """One released figure this month and the month before (None where either month lacks it)."""

    indicator: str
    figure: str
    label: str
    group: str
    unit: str
    value: float | None
    previous: float | None
    change: float | None


def store(change: Change, *, job_id: str, schedule_id: str | None, doc: dict[str, Any]) -> str:
    archive_id = uuid.uuid4().hex
    change.conn.execute(
        db.archived_results.insert().values(
            id=archive_id,
            pack=doc["pack"],
            period=doc["period"],
            job_id=job_id,
            schedule_id=schedule_id,
            figures_json=json.dumps(doc, sort_keys=True),
            created_at=db.utcnow(),
        )
    )
    change.record(
        ResultArchived(
            actor="gateway",
            archive_id=archive_id,
            job_id=job_id,
            pack=doc["pack"],
            period=doc["period"],
            figures_digest=sha256_hex(canonical_json(doc)),
        )
    )
    return archive_id


def _record(row: sa.RowMapping, *, with_doc: bool) -> ArchivedRecord:
    return ArchivedRecord(
        id=row["id"],
        pack=row["pack"],
        period=row["period"],
        job_id=row["job_id"],
        schedule_id=row["schedule_id"],
        created_at=row["created_at"],
        doc=json.loads(row["figures_json"]) if with_doc else None,
    )


# Operators and auditors see every archived run; an analyst, the runs made as them (their releases).
_SEE_ALL = (Role.OPERATOR, Role.AUDITOR)


def _visible_to(query: sa.Select[Any], who: Principal) -> sa.Select[Any]:
    if who.role in _SEE_ALL:
        return query
    t = db.archived_results
    mine = sa.select(db.jobs.c.id).where(db.jobs.c.principal == who.name)
    return query.where(sa.and_(sa.literal(who.role is Role.ANALYST), t.c.job_id.in_(mine)))


def list_archived(
    engine: sa.Engine, who: Principal, *, pack: str | None = None, limit: int = 100
) -> list[ArchivedRecord]:
    t = db.archived_results
    query = _visible_to(sa.select(t).order_by(t.c.period.desc(), t.c.created_at.desc()).limit(limit), who)
    if pack is not None:
        query = query.where(t.c.pack == pack)
    with engine.connect() as conn:
        return [_record(r, with_doc=False) for r in conn.execute(query).mappings()]


def archived(engine: sa.Engine, archive_id: str, who: Principal) -> ArchivedRecord:
    """One archived run with its document, if `who` may see it (else NotFound, as if there were none)."""
    t = db.archived_results
    with engine.connect() as conn:
        row = conn.execute(_visible_to(sa.select(t).where(t.c.id == archive_id), who)).mappings().first()
    if row is None:
        raise NotFound("no archived result with that id", "archive_id")
    return _record(row, with_doc=True)


def previous_of(engine: sa.Engine, record: ArchivedRecord, who: Principal) -> ArchivedRecord | None:
    """The newest archived run of the same pack for the month before that `who` may see, if any."""
    before = previous_months(record.period, 1)[0]
    t = db.archived_results
    with engine.connect() as conn:
        row = (
            conn.execute(
                _visible_to(
                    sa.select(t)
                    .where(t.c.pack == record.pack, t.c.period == before)
                    .order_by(t.c.created_at.desc())
                    .limit(1),
                    who,
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else _record(row, with_doc=True)


def _figures(doc: dict[str, Any]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out = {}
    for indicator in doc.get("indicators", []):
        for f in indicator.get("figures", []):
            out[(indicator["indicator"], f["figure"], f["label"], f["group"])] = f
    return out


def diff(
    engine: sa.Engine, archive_id: str, who: Principal
) -> tuple[ArchivedRecord, ArchivedRecord | None, list[FigureChange]]:
    """This run, the previous month's (None if none is archived) and every figure's change."""
    record = archived(engine, archive_id, who)
    previous = previous_of(engine, record, who)
    now = _figures(record.doc or {})
    before = _figures(previous.doc or {}) if previous is not None else {}
    changes = []
    for key in [*now, *(k for k in before if k not in now)]:
        current, earlier = now.get(key), before.get(key)
        value = None if current is None else current.get("value")
        prior = None if earlier is None else earlier.get("value")
        changes.append(
            FigureChange(
                indicator=key[0],
                figure=key[1],
                label=key[2],
                group=key[3],
                unit=str((current or earlier or {}).get("unit", "")),
                value=value,
                previous=prior,
                change=None if value is None or prior is None else value - prior,
            )
        )
    return record, previous, changes
