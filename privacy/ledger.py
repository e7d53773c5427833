"""The federation's privacy budget ledger (SQLAlchemy Core 2.0, synchronous).

The protected unit is **one household over one data year**: all its members' records, in every
department, for the months of one calendar year of the data. Every query reserves its epsilon here before
the first extract, and is charged **the full epsilon to every data year it reads** (its period and its
baseline period: a query over 2024-07..2025-06 charges 2024 and 2025, since either household-year can
change its answer). Caps, all **per data year and for the year's lifetime** (whenever the queries run):

- the **data-year cap** (``year_cap``): all queries that read the year, together;
- **per-dataset caps** set by the owning department (:meth:`Ledger.set_dataset_cap`): all queries that
  read the year of that dataset;
- **per-analyst quotas** (:meth:`Ledger.set_analyst_quota`, else ``default_analyst_quota``; None = none):
  one analyst's share of each data year.

So a household-year's loss is bounded by the data-year cap whatever the date a query runs: data for 2025
queried in 2031 draws on 2025's budget, not on a fresh one.

An entry moves ``reserved -> charged`` (released; the result is stored in the same transaction),
``reserved -> refunded`` (only while no connector has returned data) or ``reserved -> spent_failed`` (the
query failed; budget stays spent). Everything but ``refunded`` counts against every cap.

Amounts are exact: epsilons are Decimals that must be whole multiples of 10^-9 and are stored as integer
nano-epsilon, so sums in SQL never drift. Reservations are atomic: on SQLite the checks and the insert run in
one ``BEGIN IMMEDIATE`` transaction (the database's single writer lock); elsewhere (PostgreSQL, MariaDB) the
transaction locks the rows of the data years it charges with ``SELECT ... FOR UPDATE``, in a fixed order
(the rows are created beforehand, in a transaction of their own). State changes are compare-and-set
updates, so a refund racing the arrival of data cannot both succeed.
For SQLite use a file database and give the engine a busy timeout (``connect_args={"timeout": ...}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from privacy.errors import BudgetExceeded, InvalidTransition, QueryMismatch, UnknownQuery

__all__ = [
    "CHARGED",
    "COUNTED_STATES",
    "EPSILON_QUANTUM",
    "REFUNDED",
    "RESERVED",
    "SPENT_FAILED",
    "BudgetView",
    "Charge",
    "DataYearBudget",
    "Ledger",
    "Reservation",
    "create_tables",
    "data_years",
    "ledger_metadata",
]

EPSILON_QUANTUM: Final = Decimal("1e-9")
"""Smallest representable epsilon; every amount is a whole multiple of it (stored as an integer)."""

RESERVED: Final = "reserved"
CHARGED: Final = "charged"
REFUNDED: Final = "refunded"
SPENT_FAILED: Final = "spent_failed"
COUNTED_STATES: Final = (RESERVED, CHARGED, SPENT_FAILED)

ledger_metadata = sa.MetaData()

# One row per data year: the row a reservation charging that year locks on PostgreSQL and MariaDB.
# (The table kept its first name, from when budgets followed the calendar year a query ran in.)
windows_table = sa.Table(
    "ledger_windows",
    ledger_metadata,
    sa.Column("budget_window", sa.String(16), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

entries_table = sa.Table(
    "ledger_entries",
    ledger_metadata,
    sa.Column("query_id", sa.String(200), primary_key=True),
    # The calendar year the query was reserved in: a record only, no cap reads it.
    sa.Column("budget_window", sa.String(16), nullable=False),
    sa.Column("analyst", sa.String(200), nullable=False),
    sa.Column("epsilon_nano", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("data_arrived", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("epsilon_nano > 0", name="ck_ledger_entries_epsilon_positive"),
    sa.CheckConstraint(
        "state IN ('reserved', 'charged', 'refunded', 'spent_failed')", name="ck_ledger_entries_state"
    ),
    sa.Index("ix_ledger_entries_window_state", "budget_window", "state"),
    sa.Index("ix_ledger_entries_analyst_window", "analyst", "budget_window"),
)

# Each data year an entry charges, its full epsilon (migration 0005).
entry_years_table = sa.Table(
    "ledger_entry_years",
    ledger_metadata,
    sa.Column("query_id", sa.String(200), sa.ForeignKey("ledger_entries.query_id"), primary_key=True),
    sa.Column("data_year", sa.String(4), primary_key=True),
    sa.Index("ix_ledger_entry_years_data_year", "data_year"),
)

entry_datasets_table = sa.Table(
    "ledger_entry_datasets",
    ledger_metadata,
    sa.Column("query_id", sa.String(200), sa.ForeignKey("ledger_entries.query_id"), primary_key=True),
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Index("ix_ledger_entry_datasets_dataset", "dataset"),
)

dataset_caps_table = sa.Table(
    "ledger_dataset_caps",
    ledger_metadata,
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("cap_nano", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

analyst_quotas_table = sa.Table(
    "ledger_analyst_quotas",
    ledger_metadata,
    sa.Column("analyst", sa.String(200), primary_key=True),
    sa.Column("quota_nano", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

results_table = sa.Table(
    "ledger_results",
    ledger_metadata,
    sa.Column("query_id", sa.String(200), sa.ForeignKey("ledger_entries.query_id"), primary_key=True),
    sa.Column("result_json", sa.Text, nullable=False),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """Create the ledger's tables if absent (tests and embedded use; the gateway migrates its own)."""
    ledger_metadata.create_all(engine)


def to_nano(epsilon: Decimal) -> int:
    """Exact integer nano-epsilon of a Decimal; refuses amounts finer than :data:`EPSILON_QUANTUM`."""
    if not isinstance(epsilon, Decimal):
        raise TypeError(f"epsilon must be a Decimal (exact), not {type(epsilon).__name__}")
    if not epsilon.is_finite():
        raise ValueError("epsilon must be finite")
    units = epsilon.scaleb(9)
    if units != units.to_integral_value():
        raise ValueError(f"epsilon {epsilon} is not a whole multiple of {EPSILON_QUANTUM}")
    return int(units)


def from_nano(units: int) -> Decimal:
    """Inverse of :func:`to_nano`, normalised (``Decimal('0.1')``, not ``Decimal('0.100000000')``)."""
    value = Decimal(units).scaleb(-9)
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _local_now() -> datetime:
    return datetime.now().astimezone()


def calendar_year(moment: datetime) -> str:
    """The calendar year of ``moment``, as ``'YYYY'`` (recorded with each entry; caps ignore it)."""
    return f"{moment.year:04d}"


def _year_of(period: str) -> int:
    year, sep, month = period.partition("-")
    if not (sep and len(year) == 4 and year.isdigit() and month.isdigit() and 1 <= int(month) <= 12):
        raise ValueError(f"period {period!r} is not YYYY-MM")
    return int(year)


def data_years(ranges: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The data years (``'YYYY'``, sorted) that month ranges ``(YYYY-MM, YYYY-MM)`` read, each once.

    The one rule for what a query is charged to: every calendar year any of its months falls in (its
    period and its baseline period alike).
    """
    years: set[int] = set()
    for start, end in ranges:
        first, last = _year_of(start), _year_of(end)
        if (first, start) > (last, end):
            raise ValueError(f"period {start}..{end} ends before it starts")
        years.update(range(first, last + 1))
    if not years:
        raise ValueError("a charge needs at least one period")
    return tuple(f"{y:04d}" for y in sorted(years))


def _valid_years(years: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(set(years)))
    if not out:
        raise ValueError("a charge needs at least one data year")
    for y in out:
        if not (len(y) == 4 and y.isdigit()):
            raise ValueError(f"data year {y!r} is not YYYY")
    return out


@dataclass(frozen=True)
class Charge:
    """What one query asks of the ledger: its epsilon, charged in full to each of its data years."""

    query_id: str
    datasets: Sequence[str]
    epsilon: Decimal
    data_years: Sequence[str]


@dataclass(frozen=True)
class Reservation:
    """A query's ledger entry. ``created`` is False when :meth:`Ledger.reserve` found it already there."""

    query_id: str
    analyst: str
    datasets: tuple[str, ...]
    data_years: tuple[str, ...]
    epsilon: Decimal
    state: str
    data_arrived: bool
    created: bool = False


@dataclass(frozen=True)
class DataYearBudget:
    """One data year's lifetime budget: spent by every query that read it, and what is left.

    ``analyst_*`` are the asking analyst's (None where no quota applies); ``datasets`` maps each capped
    dataset to what its department's cap leaves in this year.
    """

    year: str
    cap: Decimal
    spent: Decimal
    remaining: Decimal
    analyst_spent: Decimal
    analyst_remaining: Decimal | None
    datasets: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetView:
    """Per data year: cap, spent and remaining, for the federation, one analyst and the capped datasets."""

    year_cap: Decimal
    analyst: str
    analyst_quota: Decimal | None
    dataset_caps: Mapping[str, Decimal]
    years: tuple[DataYearBudget, ...]

    def year(self, year: str) -> DataYearBudget:
        """The figures of one data year (KeyError if the view does not show it)."""
        for y in self.years:
            if y.year == year:
                return y
        raise KeyError(year)


class Ledger:
    """The federation budget ledger over one SQLAlchemy engine (SQLite, PostgreSQL or MariaDB)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        year_cap: Decimal,
        default_analyst_quota: Decimal | None,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        if to_nano(year_cap) < 0:
            raise ValueError("year_cap must be >= 0")
        if default_analyst_quota is not None and to_nano(default_analyst_quota) < 0:
            raise ValueError("default_analyst_quota must be >= 0")
        self._engine = engine
        self._year_cap = to_nano(year_cap)
        self._default_quota = None if default_analyst_quota is None else to_nano(default_analyst_quota)
        self._clock = clock
        self._dialect = engine.dialect.name

    @property
    def year_cap(self) -> Decimal:
        """The lifetime epsilon of one data year, over every query that reads it."""
        return from_nano(self._year_cap)

    # -- transactions ----------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One write transaction; on SQLite it takes the database's write lock up front."""
        if self._dialect == "sqlite":
            # Driver-level autocommit stops pysqlite from opening its own deferred transaction, so the
            # explicit BEGIN IMMEDIATE is the one that runs: it waits (busy timeout) for the single writer
            # lock instead of failing later when a read transaction tries to upgrade.
            with self._engine.connect() as raw:
                conn = raw.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
        else:
            with self._engine.begin() as conn:
                yield conn

    def _ensure_years(self, years: Sequence[str]) -> None:
        """Create the lock rows of these data years, in their own short transaction.

        Kept out of the locking transaction: on MariaDB an INSERT IGNORE that meets an existing row takes a
        shared lock on it, and upgrading that to the exclusive lock of FOR UPDATE deadlocks concurrent
        reservations.
        """
        now = self._clock()
        rows = [{"budget_window": y, "created_at": now} for y in sorted(years)]
        with self._engine.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(postgresql.insert(windows_table).on_conflict_do_nothing(), rows)
            elif self._dialect in ("mysql", "mariadb"):
                conn.execute(mysql.insert(windows_table).prefix_with("IGNORE"), rows)
            else:  # pragma: no cover - other dialects: insert the missing rows, tolerate a racing twin
                present = set(conn.execute(sa.select(windows_table.c.budget_window)).scalars())
                missing = [r for r in rows if r["budget_window"] not in present]
                if missing:
                    conn.execute(sa.insert(windows_table), missing)

    def _lock_years(self, conn: sa.Connection, years: Sequence[str]) -> None:
        """Serialise reservations that charge these data years (no-op on SQLite, already exclusive)."""
        if self._dialect == "sqlite":
            return
        conn.execute(
            sa.select(windows_table.c.budget_window)
            .where(windows_table.c.budget_window.in_(sorted(years)))
            .order_by(windows_table.c.budget_window)
            .with_for_update()
        ).all()

    # -- reading ---------------------------------------------------------------------------------------

    @staticmethod
    def _sum(conn: sa.Connection, year: str, *conditions: sa.ColumnElement[bool]) -> int:
        """Counted epsilon of the entries charging ``year`` (and meeting ``conditions``)."""
        charging = sa.select(entry_years_table.c.query_id).where(entry_years_table.c.data_year == year)
        query = sa.select(sa.func.coalesce(sa.func.sum(entries_table.c.epsilon_nano), 0)).where(
            entries_table.c.state.in_(COUNTED_STATES), entries_table.c.query_id.in_(charging), *conditions
        )
        return int(conn.execute(query).scalar_one())

    def _spent_year(self, conn: sa.Connection, year: str) -> int:
        return self._sum(conn, year)

    def _spent_analyst(self, conn: sa.Connection, year: str, analyst: str) -> int:
        return self._sum(conn, year, entries_table.c.analyst == analyst)

    def _spent_dataset(self, conn: sa.Connection, year: str, dataset: str) -> int:
        linked = sa.select(entry_datasets_table.c.query_id).where(entry_datasets_table.c.dataset == dataset)
        return self._sum(conn, year, entries_table.c.query_id.in_(linked))

    def _dataset_caps(self, conn: sa.Connection, datasets: Sequence[str] | None = None) -> dict[str, int]:
        query = sa.select(dataset_caps_table.c.dataset, dataset_caps_table.c.cap_nano)
        if datasets is not None:
            query = query.where(dataset_caps_table.c.dataset.in_(list(datasets)))
        return {row.dataset: int(row.cap_nano) for row in conn.execute(query)}

    def _quota(self, conn: sa.Connection, analyst: str) -> int | None:
        quota = conn.execute(
            sa.select(analyst_quotas_table.c.quota_nano).where(analyst_quotas_table.c.analyst == analyst)
        ).scalar_one_or_none()
        return self._default_quota if quota is None else int(quota)

    def _entry(self, conn: sa.Connection, query_id: str) -> Reservation | None:
        row = conn.execute(sa.select(entries_table).where(entries_table.c.query_id == query_id)).one_or_none()
        if row is None:
            return None

        def linked(table: sa.Table, column: str) -> tuple[str, ...]:
            return tuple(
                conn.execute(
                    sa.select(table.c[column]).where(table.c.query_id == query_id).order_by(table.c[column])
                ).scalars()
            )

        return Reservation(
            query_id=row.query_id,
            analyst=row.analyst,
            datasets=linked(entry_datasets_table, "dataset"),
            data_years=linked(entry_years_table, "data_year"),
            epsilon=from_nano(int(row.epsilon_nano)),
            state=row.state,
            data_arrived=bool(row.data_arrived),
        )

    def entry(self, query_id: str) -> Reservation | None:
        """The query's ledger entry, if any."""
        with self._engine.connect() as conn:
            return self._entry(conn, query_id)

    def reserved_without_data(self) -> list[str]:
        """Query ids holding a reservation that no connector has answered yet (refundable)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries_table.c.query_id)
                .where(entries_table.c.state == RESERVED, entries_table.c.data_arrived.is_(False))
                .order_by(entries_table.c.query_id)
            )
            return list(rows.scalars())

    def spent(self, year: str) -> Decimal:
        """Epsilon counted against data year ``year``: reserved + charged + spent_failed."""
        with self._engine.connect() as conn:
            return from_nano(self._spent_year(conn, _valid_years([year])[0]))

    def charged_years(self) -> tuple[str, ...]:
        """Every data year some counted entry charges, in order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(entry_years_table.c.data_year)
                .join(entries_table, entries_table.c.query_id == entry_years_table.c.query_id)
                .where(entries_table.c.state.in_(COUNTED_STATES))
                .distinct()
                .order_by(entry_years_table.c.data_year)
            )
            return tuple(rows.scalars())

    def remaining(self, analyst: str, years: Sequence[str] | None = None) -> BudgetView:
        """Spent and remaining per data year: ``years``, by default every year charged so far."""
        shown = _valid_years(years) if years else self.charged_years()
        with self._engine.connect() as conn:
            quota = self._quota(conn, analyst) if analyst else None
            caps = self._dataset_caps(conn)
            out = []
            for year in shown:
                spent = self._spent_year(conn, year)
                mine = self._spent_analyst(conn, year, analyst) if analyst else 0
                out.append(
                    DataYearBudget(
                        year=year,
                        cap=from_nano(self._year_cap),
                        spent=from_nano(spent),
                        remaining=from_nano(max(self._year_cap - spent, 0)),
                        analyst_spent=from_nano(mine),
                        analyst_remaining=None if quota is None else from_nano(max(quota - mine, 0)),
                        datasets={
                            name: from_nano(max(cap - self._spent_dataset(conn, year, name), 0))
                            for name, cap in sorted(caps.items())
                        },
                    )
                )
        return BudgetView(
            year_cap=from_nano(self._year_cap),
            analyst=analyst,
            analyst_quota=None if quota is None else from_nano(quota),
            dataset_caps={name: from_nano(cap) for name, cap in sorted(caps.items())},
            years=tuple(out),
        )

    def result(self, query_id: str) -> dict[str, Any] | None:
        """The released result stored with the charge, re-fetched at no privacy cost; None if not released."""
        with self._engine.connect() as conn:
            text = conn.execute(
                sa.select(results_table.c.result_json).where(results_table.c.query_id == query_id)
            ).scalar_one_or_none()
        if text is None:
            return None
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    # -- caps ------------------------------------------------------------------------------------------

    def _upsert(self, table: sa.Table, key: str, key_value: str, column: str, amount: Decimal | None) -> None:
        with self._write() as conn:
            conn.execute(sa.delete(table).where(table.c[key] == key_value))
            if amount is not None:
                units = to_nano(amount)
                if units < 0:
                    raise ValueError("a cap or quota must be >= 0")
                conn.execute(
                    sa.insert(table).values({key: key_value, column: units, "updated_at": self._clock()})
                )

    def set_dataset_cap(self, dataset: str, epsilon: Decimal | None) -> None:
        """Set the department's lifetime cap for each data year of ``dataset``; None removes it."""
        self._upsert(dataset_caps_table, "dataset", dataset, "cap_nano", epsilon)

    def set_analyst_quota(self, analyst: str, epsilon: Decimal | None) -> None:
        """Set ``analyst``'s share of each data year; None falls back to the default quota."""
        self._upsert(analyst_quotas_table, "analyst", analyst, "quota_nano", epsilon)

    # -- the life of an entry --------------------------------------------------------------------------

    def reserve(
        self,
        query_id: str,
        *,
        analyst: str,
        datasets: Sequence[str],
        epsilon: Decimal,
        data_years: Sequence[str],
    ) -> Reservation:
        """Atomically check every cap of every data year and reserve ``epsilon`` against each of them.

        Idempotent: if the query already has a counted entry it is returned (``created=False``) and nothing
        is charged again; a refunded entry is reserved afresh (a retry after no data arrived). Raises
        :class:`BudgetExceeded` naming the first cap and data year that would be passed,
        :class:`QueryMismatch` if the id was reserved with another analyst, dataset list, epsilon or data
        years.
        """
        return self.reserve_many([Charge(query_id, datasets, epsilon, data_years)], analyst=analyst)[0]

    def reserve_many(self, items: Sequence[Charge], *, analyst: str) -> list[Reservation]:
        """Reserve several queries of one analyst all together or not at all.

        One transaction checks every cap against the sum of the new reservations (a pack of indicators
        that does not fit is refused before any of its queries runs); entries already counted are returned
        as they are, exactly as :meth:`reserve` does for one query.
        """
        wanted = []
        for item in items:
            units = to_nano(item.epsilon)
            if units <= 0:
                raise ValueError("epsilon must be > 0")
            names = tuple(sorted(set(item.datasets)))
            wanted.append((item.query_id, names, units, _valid_years(item.data_years)))
        if len({q for q, _, _, _ in wanted}) != len(wanted):
            raise ValueError("a query id appears twice in one reservation")
        years = sorted({y for _, _, _, ys in wanted for y in ys})
        if self._dialect != "sqlite":
            self._ensure_years(years)
        out: list[Reservation] = []
        with self._write() as conn:
            self._lock_years(conn, years)
            fresh: list[tuple[str, tuple[str, ...], int, tuple[str, ...], Reservation | None]] = []
            for query_id, names, units, ys in wanted:
                existing = self._entry(conn, query_id)
                if existing is not None:
                    if (
                        existing.analyst,
                        existing.datasets,
                        to_nano(existing.epsilon),
                        existing.data_years,
                    ) != (
                        analyst,
                        names,
                        units,
                        ys,
                    ):
                        raise QueryMismatch(
                            f"query {query_id!r} was reserved before with a different analyst, dataset list, "
                            "epsilon or data years; a query id names one immutable query"
                        )
                    if existing.state != REFUNDED:
                        out.append(existing)
                        continue
                fresh.append((query_id, names, units, ys, existing))
            if fresh:
                self._check_caps(conn, analyst, [(names, units, ys) for _, names, units, ys, _ in fresh])
            now = self._clock()
            for query_id, names, units, ys, existing in fresh:
                if existing is None:
                    conn.execute(
                        sa.insert(entries_table).values(
                            query_id=query_id,
                            budget_window=calendar_year(now),
                            analyst=analyst,
                            epsilon_nano=units,
                            state=RESERVED,
                            data_arrived=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    conn.execute(
                        sa.insert(entry_years_table), [{"query_id": query_id, "data_year": y} for y in ys]
                    )
                    if names:
                        conn.execute(
                            sa.insert(entry_datasets_table),
                            [{"query_id": query_id, "dataset": d} for d in names],
                        )
                else:
                    conn.execute(
                        sa.update(entries_table)
                        .where(entries_table.c.query_id == query_id, entries_table.c.state == REFUNDED)
                        .values(
                            state=RESERVED,
                            data_arrived=False,
                            budget_window=calendar_year(now),
                            updated_at=now,
                        )
                    )
                out.append(
                    Reservation(
                        query_id=query_id,
                        analyst=analyst,
                        datasets=names,
                        data_years=ys,
                        epsilon=from_nano(units),
                        state=RESERVED,
                        data_arrived=False,
                        created=True,
                    )
                )
        order = {q: i for i, (q, _, _, _) in enumerate(wanted)}
        return sorted(out, key=lambda r: order[r.query_id])

    def _check_caps(
        self,
        conn: sa.Connection,
        analyst: str,
        fresh: Sequence[tuple[tuple[str, ...], int, tuple[str, ...]]],
    ) -> None:
        """Every cap of every data year against what the new entries (datasets, units, years) add to it."""

        def check(cap: int, spent: int, more: int, scope: str, kind: str, year: str) -> None:
            if spent + more > cap:
                raise BudgetExceeded(
                    scope, from_nano(more), from_nano(max(cap - spent, 0)), kind=kind, data_year=year
                )

        quota = self._quota(conn, analyst)
        all_datasets = sorted({d for names, _, _ in fresh for d in names})
        caps = self._dataset_caps(conn, all_datasets)
        for year in sorted({y for _, _, ys in fresh for y in ys}):
            charging = [(names, units) for names, units, ys in fresh if year in ys]
            more = sum(units for _, units in charging)
            check(self._year_cap, self._spent_year(conn, year), more, f"data year {year}", "data_year", year)
            for dataset, cap in sorted(caps.items()):
                on_dataset = sum(units for names, units in charging if dataset in names)
                if on_dataset:
                    spent = self._spent_dataset(conn, year, dataset)
                    check(cap, spent, on_dataset, f"dataset {dataset}, data year {year}", "dataset", year)
            if quota is not None:
                spent = self._spent_analyst(conn, year, analyst)
                check(quota, spent, more, f"analyst quota of {analyst}, data year {year}", "analyst", year)

    def _transition(
        self,
        conn: sa.Connection,
        query_id: str,
        values: Mapping[str, Any],
        *conditions: sa.ColumnElement[bool],
    ) -> bool:
        """Compare-and-set on one entry; True if it changed. Unknown ids raise."""
        changed = conn.execute(
            sa.update(entries_table)
            .where(entries_table.c.query_id == query_id, *conditions)
            .values(**values, updated_at=self._clock())
        ).rowcount
        if changed:
            return True
        if self._entry(conn, query_id) is None:
            raise UnknownQuery(query_id)
        return False

    def mark_data_arrived(self, query_id: str) -> None:
        """Record that a connector returned data: from now on the reservation can no longer be refunded."""
        with self._write() as conn:
            if not self._transition(
                conn, query_id, {"data_arrived": True}, entries_table.c.state == RESERVED
            ):
                entry = self._entry(conn, query_id)
                assert entry is not None
                if entry.state not in (CHARGED, SPENT_FAILED):
                    raise InvalidTransition(
                        query_id, entry.state, "mark data arrived for", "the reservation was refunded"
                    )

    def refund(self, query_id: str) -> None:
        """Free a reservation for which no connector returned data. Refunding twice is a no-op."""
        with self._write() as conn:
            if self._transition(
                conn,
                query_id,
                {"state": REFUNDED},
                entries_table.c.state == RESERVED,
                entries_table.c.data_arrived.is_(False),
            ):
                return
            entry = self._entry(conn, query_id)
            assert entry is not None
            if entry.state == REFUNDED:
                return
            reason = (
                "data has arrived, so the budget stays spent"
                if entry.state == RESERVED
                else "only a reservation without data can be refunded"
            )
            raise InvalidTransition(query_id, entry.state, "refund", reason)

    def fail(self, query_id: str) -> None:
        """Mark a reserved query as failed; its budget stays counted (use :meth:`refund` if no data came)."""
        with self._write() as conn:
            if self._transition(conn, query_id, {"state": SPENT_FAILED}, entries_table.c.state == RESERVED):
                return
            entry = self._entry(conn, query_id)
            assert entry is not None
            if entry.state != SPENT_FAILED:
                raise InvalidTransition(query_id, entry.state, "fail", "only a reserved query can fail")

    def commit(self, query_id: str, result: Mapping[str, Any]) -> None:
        """In one transaction: charge the reservation and store the released result (JSON).

        Committing the same result again is a no-op; a different result for a charged query is refused,
        because a query is released once (re-serve :meth:`result` instead of drawing fresh noise).
        """
        text = json.dumps(result, sort_keys=True, separators=(",", ":"), allow_nan=False)
        with self._write() as conn:
            if self._transition(
                conn,
                query_id,
                {"state": CHARGED, "data_arrived": True},
                entries_table.c.state == RESERVED,
            ):
                conn.execute(
                    sa.insert(results_table).values(
                        query_id=query_id, result_json=text, stored_at=self._clock()
                    )
                )
                return
            entry = self._entry(conn, query_id)
            assert entry is not None
            if entry.state == CHARGED:
                stored = conn.execute(
                    sa.select(results_table.c.result_json).where(results_table.c.query_id == query_id)
                ).scalar_one_or_none()
                if stored == text:
                    return
                raise InvalidTransition(
                    query_id, entry.state, "commit", "it was released with another result; re-serve that one"
                )
            raise InvalidTransition(query_id, entry.state, "commit", "only a reserved query can be committed")
