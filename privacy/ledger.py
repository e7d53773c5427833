"""The federation's privacy budget ledger (SQLAlchemy Core 2.0, synchronous).

Every query reserves its epsilon here before the first extract, whatever datasets it touches. Caps, all
per **budget window** (the calendar year of the clock's reading, labelled ``'YYYY'``; give the ledger a clock
in the federation's time zone):

- the **federation window cap** (``window_cap``): all queries of the window together;
- the **multi-year cap** (``multi_year_cap``): all queries of the current window and the
  ``multi_year_span - 1`` windows before it (default span 5 calendar years), so that a new year does not
  hand a fresh full budget to a population that was queried every year;
- **per-dataset caps** set by the owning department (:meth:`Ledger.set_dataset_cap`): all queries of the
  window that touch the dataset;
- **per-analyst quotas** (:meth:`Ledger.set_analyst_quota`, else ``default_analyst_quota``; None = none).

An entry moves ``reserved -> charged`` (released; the result is stored in the same transaction),
``reserved -> refunded`` (only while no connector has returned data) or ``reserved -> spent_failed`` (the
query failed; budget stays spent). Everything but ``refunded`` counts against every cap.

Amounts are exact: epsilons are Decimals that must be whole multiples of 10^-9 and are stored as integer
nano-epsilon, so sums in SQL never drift. Reservations are atomic: on SQLite the checks and the insert run in
one ``BEGIN IMMEDIATE`` transaction (the database's single writer lock); elsewhere (PostgreSQL, MariaDB) the
transaction locks the rows of the windows it reads with ``SELECT ... FOR UPDATE``, in a fixed order (the rows
are created beforehand, in a transaction of their own). State
changes are compare-and-set updates, so a refund racing the arrival of data cannot both succeed.
For SQLite use a file database and give the engine a busy timeout (``connect_args={"timeout": ...}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "Ledger",
    "Reservation",
    "create_tables",
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

# One row per budget window: the row a reservation locks on PostgreSQL and MariaDB.
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
    """The default budget window: the calendar year of ``moment``, as ``'YYYY'``."""
    return f"{moment.year:04d}"


@dataclass(frozen=True)
class Reservation:
    """A query's ledger entry. ``created`` is False when :meth:`Ledger.reserve` found it already there."""

    query_id: str
    window: str
    analyst: str
    datasets: tuple[str, ...]
    epsilon: Decimal
    state: str
    data_arrived: bool
    created: bool = False


@dataclass(frozen=True)
class BudgetView:
    """What is left in the current window for one analyst; None where no quota applies."""

    window: str
    window_cap: Decimal
    window_remaining: Decimal
    multi_year_windows: tuple[str, ...]
    multi_year_cap: Decimal
    multi_year_remaining: Decimal
    analyst: str
    analyst_quota: Decimal | None
    analyst_remaining: Decimal | None
    datasets: Mapping[str, Decimal] = field(default_factory=dict)


class Ledger:
    """The federation budget ledger over one SQLAlchemy engine (SQLite, PostgreSQL or MariaDB)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        window_cap: Decimal,
        multi_year_cap: Decimal,
        default_analyst_quota: Decimal | None,
        multi_year_span: int = 5,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        for name, value in (("window_cap", window_cap), ("multi_year_cap", multi_year_cap)):
            if to_nano(value) < 0:
                raise ValueError(f"{name} must be >= 0")
        if default_analyst_quota is not None and to_nano(default_analyst_quota) < 0:
            raise ValueError("default_analyst_quota must be >= 0")
        if multi_year_span < 1:
            raise ValueError("multi_year_span must be at least 1")
        self._engine = engine
        self._window_cap = to_nano(window_cap)
        self._multi_year_cap = to_nano(multi_year_cap)
        self._default_quota = None if default_analyst_quota is None else to_nano(default_analyst_quota)
        self._span = multi_year_span
        self._clock = clock
        self._dialect = engine.dialect.name

    # -- windows -------------------------------------------------------------------------------------

    def current_window(self) -> str:
        """The budget window of the clock's current reading."""
        return calendar_year(self._clock())

    def multi_year_windows(self, window: str | None = None) -> tuple[str, ...]:
        """The windows the multi-year cap adds up: ``window`` and the ``multi_year_span - 1`` before it."""
        year = int(window or self.current_window())
        return tuple(f"{y:04d}" for y in range(year - self._span + 1, year + 1))

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

    def _ensure_windows(self, windows: Sequence[str]) -> None:
        """Create the lock rows of these windows, in their own short transaction.

        Kept out of the locking transaction: on MariaDB an INSERT IGNORE that meets an existing row takes a
        shared lock on it, and upgrading that to the exclusive lock of FOR UPDATE deadlocks concurrent
        reservations.
        """
        now = self._clock()
        rows = [{"budget_window": w, "created_at": now} for w in sorted(windows)]
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

    def _lock_windows(self, conn: sa.Connection, windows: Sequence[str]) -> None:
        """Serialise reservations that read these windows (no-op on SQLite, already exclusive)."""
        if self._dialect == "sqlite":
            return
        conn.execute(
            sa.select(windows_table.c.budget_window)
            .where(windows_table.c.budget_window.in_(sorted(windows)))
            .order_by(windows_table.c.budget_window)
            .with_for_update()
        ).all()

    # -- reading ---------------------------------------------------------------------------------------

    @staticmethod
    def _sum(conn: sa.Connection, *conditions: sa.ColumnElement[bool]) -> int:
        query = sa.select(sa.func.coalesce(sa.func.sum(entries_table.c.epsilon_nano), 0)).where(
            entries_table.c.state.in_(COUNTED_STATES), *conditions
        )
        return int(conn.execute(query).scalar_one())

    def _spent_window(self, conn: sa.Connection, window: str) -> int:
        return self._sum(conn, entries_table.c.budget_window == window)

    def _spent_windows(self, conn: sa.Connection, windows: Sequence[str]) -> int:
        return self._sum(conn, entries_table.c.budget_window.in_(list(windows)))

    def _spent_analyst(self, conn: sa.Connection, window: str, analyst: str) -> int:
        return self._sum(conn, entries_table.c.budget_window == window, entries_table.c.analyst == analyst)

    def _spent_dataset(self, conn: sa.Connection, window: str, dataset: str) -> int:
        linked = sa.select(entry_datasets_table.c.query_id).where(entry_datasets_table.c.dataset == dataset)
        return self._sum(conn, entries_table.c.budget_window == window, entries_table.c.query_id.in_(linked))

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
        datasets = conn.execute(
            sa.select(entry_datasets_table.c.dataset)
            .where(entry_datasets_table.c.query_id == query_id)
            .order_by(entry_datasets_table.c.dataset)
        ).scalars()
        return Reservation(
            query_id=row.query_id,
            window=row.budget_window,
            analyst=row.analyst,
            datasets=tuple(datasets),
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

    def spent(self, window: str | None = None) -> Decimal:
        """Epsilon counted in ``window`` (default: the current one): reserved + charged + spent_failed."""
        with self._engine.connect() as conn:
            return from_nano(self._spent_window(conn, window or self.current_window()))

    def remaining(self, analyst: str) -> BudgetView:
        """Remaining budget of the current window: federation, multi-year, the analyst's quota, datasets."""
        window = self.current_window()
        years = self.multi_year_windows(window)
        with self._engine.connect() as conn:
            window_left = self._window_cap - self._spent_window(conn, window)
            multi_left = self._multi_year_cap - self._spent_windows(conn, years)
            quota = self._quota(conn, analyst)
            analyst_left = None if quota is None else quota - self._spent_analyst(conn, window, analyst)
            datasets = {
                name: from_nano(max(cap - self._spent_dataset(conn, window, name), 0))
                for name, cap in sorted(self._dataset_caps(conn).items())
            }
        return BudgetView(
            window=window,
            window_cap=from_nano(self._window_cap),
            window_remaining=from_nano(max(window_left, 0)),
            multi_year_windows=years,
            multi_year_cap=from_nano(self._multi_year_cap),
            multi_year_remaining=from_nano(max(multi_left, 0)),
            analyst=analyst,
            analyst_quota=None if quota is None else from_nano(quota),
            analyst_remaining=None if analyst_left is None else from_nano(max(analyst_left, 0)),
            datasets=datasets,
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
        """Set the department's cap for ``dataset`` per window; None removes it."""
        self._upsert(dataset_caps_table, "dataset", dataset, "cap_nano", epsilon)

    def set_analyst_quota(self, analyst: str, epsilon: Decimal | None) -> None:
        """Set ``analyst``'s quota per window; None falls back to the default quota."""
        self._upsert(analyst_quotas_table, "analyst", analyst, "quota_nano", epsilon)

    # -- the life of an entry --------------------------------------------------------------------------

    def reserve(
        self, query_id: str, *, analyst: str, datasets: Sequence[str], epsilon: Decimal
    ) -> Reservation:
        """Atomically check every cap and reserve ``epsilon`` for the query in the current window.

        Idempotent: if the query already has a counted entry it is returned (``created=False``) and nothing
        is charged again; a refunded entry is reserved afresh (a retry after no data arrived). Raises
        :class:`BudgetExceeded` naming the first cap that would be passed, :class:`QueryMismatch` if the id
        was reserved with another analyst, dataset list or epsilon.
        """
        return self.reserve_many([(query_id, datasets, epsilon)], analyst=analyst)[0]

    def reserve_many(
        self, items: Sequence[tuple[str, Sequence[str], Decimal]], *, analyst: str
    ) -> list[Reservation]:
        """Reserve several queries (id, datasets, epsilon) of one analyst all together or not at all.

        One transaction checks every cap against the sum of the new reservations (a pack of indicators
        that does not fit is refused before any of its queries runs); entries already counted are returned
        as they are, exactly as :meth:`reserve` does for one query.
        """
        wanted = []
        for query_id, datasets, epsilon in items:
            units = to_nano(epsilon)
            if units <= 0:
                raise ValueError("epsilon must be > 0")
            wanted.append((query_id, tuple(sorted(set(datasets))), units))
        if len({q for q, _, _ in wanted}) != len(wanted):
            raise ValueError("a query id appears twice in one reservation")
        window = self.current_window()
        years = self.multi_year_windows(window)
        if self._dialect != "sqlite":
            self._ensure_windows(years)
        out: list[Reservation] = []
        with self._write() as conn:
            self._lock_windows(conn, years)
            fresh: list[tuple[str, tuple[str, ...], int, Reservation | None]] = []
            for query_id, names, units in wanted:
                existing = self._entry(conn, query_id)
                if existing is not None:
                    if (existing.analyst, existing.datasets, to_nano(existing.epsilon)) != (
                        analyst,
                        names,
                        units,
                    ):
                        raise QueryMismatch(
                            f"query {query_id!r} was reserved before with a different analyst, dataset list "
                            "or epsilon; a query id names one immutable query"
                        )
                    if existing.state != REFUNDED:
                        out.append(existing)
                        continue
                fresh.append((query_id, names, units, existing))
            if fresh:
                per_dataset: dict[str, int] = {}
                for _, names, units, _ in fresh:
                    for d in names:
                        per_dataset[d] = per_dataset.get(d, 0) + units
                total = sum(units for _, _, units, _ in fresh)
                self._check_caps(conn, window, years, analyst, per_dataset, total)
            now = self._clock()
            for query_id, names, units, existing in fresh:
                if existing is None:
                    conn.execute(
                        sa.insert(entries_table).values(
                            query_id=query_id,
                            budget_window=window,
                            analyst=analyst,
                            epsilon_nano=units,
                            state=RESERVED,
                            data_arrived=False,
                            created_at=now,
                            updated_at=now,
                        )
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
                        .values(state=RESERVED, data_arrived=False, budget_window=window, updated_at=now)
                    )
                out.append(
                    Reservation(
                        query_id=query_id,
                        window=window,
                        analyst=analyst,
                        datasets=names,
                        epsilon=from_nano(units),
                        state=RESERVED,
                        data_arrived=False,
                        created=True,
                    )
                )
        order = {q: i for i, (q, _, _) in enumerate(wanted)}
        return sorted(out, key=lambda r: order[r.query_id])

    def _check_caps(
        self,
        conn: sa.Connection,
        window: str,
        years: Sequence[str],
        analyst: str,
        per_dataset: Mapping[str, int],
        units: int,
    ) -> None:
        """Every cap against ``units`` more in all, and ``per_dataset[d]`` more on each dataset."""

        def check(cap: int, spent: int, scope: str, kind: str, more: int = units) -> None:
            if spent + more > cap:
                raise BudgetExceeded(scope, from_nano(more), from_nano(max(cap - spent, 0)), kind=kind)

        check(self._window_cap, self._spent_window(conn, window), f"federation window {window}", "window")
        check(
            self._multi_year_cap,
            self._spent_windows(conn, years),
            f"multi-year {years[0]}-{years[-1]}",
            "multi_year",
        )
        for dataset, cap in sorted(self._dataset_caps(conn, list(per_dataset)).items()):
            spent = self._spent_dataset(conn, window, dataset)
            check(cap, spent, f"dataset {dataset}", "dataset", per_dataset[dataset])
        quota = self._quota(conn, analyst)
        if quota is not None:
            check(quota, self._spent_analyst(conn, window, analyst), f"analyst quota of {analyst}", "analyst")

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
