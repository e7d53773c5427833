"""The federation budget ledger: exact amounts, per-data-year caps and their messages, the entry life cycle,
races."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.errors import BudgetExceeded, InvalidTransition, QueryMismatch, UnknownQuery
from privacy.ledger import (
    CHARGED,
    REFUNDED,
    RESERVED,
    SPENT_FAILED,
    Charge,
    Ledger,
    create_tables,
    data_years,
    entries_table,
    from_nano,
    results_table,
    to_nano,
)


class Clock:
    """A settable clock, so tests can run queries years apart."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def sqlite_engine(path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = sqlite_engine(tmp_path / "ledger.db")
    create_tables(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_ledger(engine: sa.Engine, clock: Clock) -> Callable[..., Ledger]:
    def make(**kwargs: object) -> Ledger:
        options: dict[str, object] = {
            "year_cap": Decimal("10"),
            "default_analyst_quota": None,
            "clock": clock,
        }
        options.update(kwargs)
        return Ledger(engine, **options)  # type: ignore[arg-type]

    return make


Y = ("2026",)
"""The data year most tests charge."""


def reserve(
    ledger: Ledger,
    query_id: str,
    epsilon: str,
    *,
    analyst: str = "ana",
    datasets: tuple[str, ...] = (),
    years: tuple[str, ...] = Y,
) -> None:
    ledger.reserve(
        query_id, analyst=analyst, datasets=list(datasets), epsilon=Decimal(epsilon), data_years=years
    )


# -- exact arithmetic ---------------------------------------------------------------------------------------

epsilons = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("0.5"), places=9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amounts=st.lists(epsilons, min_size=1, max_size=40))
def test_sums_of_many_small_epsilons_are_exact(
    tmp_path_factory: pytest.TempPathFactory, amounts: list[Decimal]
) -> None:
    eng = sqlite_engine(tmp_path_factory.mktemp("exact") / "ledger.db")
    create_tables(eng)
    ledger = Ledger(eng, year_cap=Decimal("100"), default_analyst_quota=None)
    for i, amount in enumerate(amounts):
        ledger.reserve(f"q{i}", analyst="ana", datasets=["tax.wages"], epsilon=amount, data_years=Y)
    assert ledger.spent("2026") == sum(amounts, Decimal(0))
    year = ledger.remaining("ana").year("2026")
    assert year.remaining == Decimal("100") - sum(amounts, Decimal(0))
    assert year.remaining + year.spent == Decimal("100")
    eng.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    charges=st.lists(
        st.tuples(
            st.sampled_from([Decimal("0.05"), Decimal("0.1"), Decimal("0.25"), Decimal("0.3")]),
            st.sets(st.sampled_from(["2023", "2024", "2025"]), min_size=1),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_each_data_year_adds_up_exactly_and_never_passes_its_cap(
    tmp_path_factory: pytest.TempPathFactory, charges: list[tuple[Decimal, set[str]]]
) -> None:
    eng = sqlite_engine(tmp_path_factory.mktemp("years") / "ledger.db")
    create_tables(eng)
    ledger = Ledger(eng, year_cap=Decimal("1"), default_analyst_quota=None)
    model = {"2023": Decimal(0), "2024": Decimal(0), "2025": Decimal(0)}
    for i, (epsilon, years) in enumerate(charges):
        fits = all(model[y] + epsilon <= 1 for y in years)
        try:
            ledger.reserve(f"q{i}", analyst="ana", datasets=[], epsilon=epsilon, data_years=sorted(years))
        except BudgetExceeded as exc:
            assert not fits
            assert exc.data_year in years and model[exc.data_year] + epsilon > 1
            assert exc.remaining == 1 - model[exc.data_year]
            continue
        assert fits
        for y in years:
            model[y] += epsilon
    for year, spent in model.items():
        assert ledger.spent(year) == spent <= 1
    eng.dispose()


@given(st.integers(min_value=0, max_value=10**15))
def test_nano_conversion_round_trips(units: int) -> None:
    assert to_nano(from_nano(units)) == units


def test_amounts_finer_than_the_quantum_or_inexact_types_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        to_nano(Decimal("0.0000000001"))
    with pytest.raises(TypeError, match="Decimal"):
        to_nano(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        to_nano(Decimal("NaN"))


def test_a_third_tenth_is_not_rounded_into_the_ledger(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(year_cap=Decimal("0.3"))
    for i in range(3):
        reserve(ledger, f"q{i}", "0.1")
    # Float arithmetic would say 0.1 + 0.1 + 0.1 > 0.3; exact arithmetic leaves exactly nothing.
    assert ledger.spent("2026") == Decimal("0.3")
    assert ledger.remaining("ana").year("2026").remaining == 0


# -- data years ---------------------------------------------------------------------------------------------


def test_data_years_are_every_year_a_period_or_baseline_touches() -> None:
    assert data_years([("2025-01", "2025-12")]) == ("2025",)
    assert data_years([("2024-07", "2025-06")]) == ("2024", "2025")
    # A baseline in the year before counts too; each year once, in order.
    assert data_years([("2025-01", "2025-03"), ("2024-10", "2024-12")]) == ("2024", "2025")
    assert data_years([("2023-12", "2026-01")]) == ("2023", "2024", "2025", "2026")
    with pytest.raises(ValueError, match="YYYY-MM"):
        data_years([("2025-13", "2025-12")])
    with pytest.raises(ValueError, match="ends before"):
        data_years([("2025-06", "2025-01")])
    with pytest.raises(ValueError, match="at least one"):
        data_years([])


def test_a_query_over_two_data_years_charges_both_the_full_epsilon(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(year_cap=Decimal("1"))
    reserve(ledger, "july-to-june", "0.6", years=data_years([("2024-07", "2025-06")]))
    entry = ledger.entry("july-to-june")
    assert entry is not None and entry.data_years == ("2024", "2025")
    assert (ledger.spent("2024"), ledger.spent("2025"), ledger.spent("2026")) == (
        Decimal("0.6"),
        Decimal("0.6"),
        Decimal(0),
    )
    # 2024 has 0.4 left: a query over 2024 alone passes, one over 2024 and 2025 then finds 2025 short too.
    reserve(ledger, "q2024", "0.4", years=("2024",))
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, "both", "0.1", years=("2024", "2025"))
    assert info.value.data_year == "2024"
    assert ledger.entry("both") is None
    assert ledger.spent("2025") == Decimal("0.6")  # nothing of the refused query landed on 2025
    view = ledger.remaining("ana")
    assert [(y.year, y.spent, y.remaining) for y in view.years] == [
        ("2024", Decimal("1"), Decimal("0")),
        ("2025", Decimal("0.6"), Decimal("0.4")),
    ]


def test_a_spent_data_year_is_refused_whatever_the_date(
    make_ledger: Callable[..., Ledger], clock: Clock
) -> None:
    ledger = make_ledger(year_cap=Decimal("1.0"))
    clock.moment = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    reserve(ledger, "q-in-2025", "0.7", years=("2025",))
    for later in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2031, 6, 1, tzinfo=UTC)):
        clock.moment = later
        with pytest.raises(BudgetExceeded) as info:
            reserve(ledger, f"q-{later.year}", "0.5", years=("2025",))
        err = info.value
        assert (err.kind, err.data_year, err.requested, err.remaining, err.difference) == (
            "data_year",
            "2025",
            Decimal("0.5"),
            Decimal("0.3"),
            Decimal("0.2"),
        )
        message = str(err)
        assert "data year 2025" in message
        assert (
            "requested epsilon=0.5" in message and "remaining epsilon=0.3" in message and "by 0.2" in message
        )
        assert "whenever they run" in message
    # The data year of the query's date is a separate budget: 2031's data is untouched.
    reserve(ledger, "q-2031-data", "1.0", years=("2031",))
    assert ledger.spent("2025") == Decimal("0.7") and ledger.spent("2031") == Decimal("1.0")


def test_a_pack_is_reserved_all_or_nothing_across_data_years(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(year_cap=Decimal("1"))
    reserve(ledger, "earlier", "0.5", years=("2024",))
    pack = [
        Charge("a", ["tax.wages"], Decimal("0.3"), ("2025",)),
        Charge("b", ["tax.wages"], Decimal("0.3"), ("2024", "2025")),  # 2024: 0.5 + 0.3 ok
        Charge("c", [], Decimal("0.3"), ("2024",)),  # 2024: 0.5 + 0.3 + 0.3 > 1
    ]
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve_many(pack, analyst="ana")
    assert (info.value.data_year, info.value.requested, info.value.remaining) == (
        "2024",
        Decimal("0.6"),
        Decimal("0.5"),
    )
    assert [ledger.entry(q) for q in "abc"] == [None, None, None]
    done = ledger.reserve_many(pack[:2], analyst="ana")
    assert [r.data_years for r in done] == [("2025",), ("2024", "2025")]
    assert (ledger.spent("2024"), ledger.spent("2025")) == (Decimal("0.8"), Decimal("0.6"))


def test_the_budget_view_shows_the_years_asked_for(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(default_analyst_quota=Decimal("4"))
    assert ledger.remaining("ana").years == ()
    reserve(ledger, "q1", "1", years=("2023", "2024"))
    reserve(ledger, "q2", "2", analyst="bob", years=("2024",))
    view = ledger.remaining("ana", ["2024", "2030"])
    assert view.year_cap == Decimal("10") and view.analyst_quota == Decimal("4")
    y2024, y2030 = view.years
    assert (y2024.spent, y2024.remaining, y2024.analyst_spent, y2024.analyst_remaining) == (
        Decimal("3"),
        Decimal("7"),
        Decimal("1"),
        Decimal("3"),
    )
    assert (y2030.spent, y2030.remaining, y2030.analyst_remaining) == (
        Decimal(0),
        Decimal("10"),
        Decimal("4"),
    )
    with pytest.raises(ValueError, match="YYYY"):
        ledger.remaining("ana", ["24"])


# -- caps and the BudgetExceeded message ---------------------------------------------------------------------


def test_dataset_cap_is_per_dataset_and_data_year(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.set_dataset_cap("tax.wages", Decimal("1"))
    reserve(ledger, "q1", "0.8", datasets=("tax.wages", "civil.register"))
    reserve(ledger, "q2", "0.8", datasets=("civil.register",))
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, "q3", "0.5", analyst="bob", datasets=("civil.register", "tax.wages"))
    assert info.value.kind == "dataset"
    assert info.value.scope == "dataset tax.wages, data year 2026"
    assert info.value.remaining == Decimal("0.2")
    assert "dataset tax.wages" in str(info.value)
    assert ledger.remaining("ana").year("2026").datasets == {"tax.wages": Decimal("0.2")}
    assert ledger.remaining("ana").dataset_caps == {"tax.wages": Decimal("1")}
    # Another data year of the same dataset has its own cap.
    reserve(ledger, "q3-2025", "0.5", analyst="bob", datasets=("tax.wages",), years=("2025",))
    ledger.set_dataset_cap("tax.wages", None)
    reserve(ledger, "q3", "0.5", analyst="bob", datasets=("civil.register", "tax.wages"))


def test_analyst_quota_default_and_override_per_data_year(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(default_analyst_quota=Decimal("1"))
    reserve(ledger, "q1", "0.6")
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, "q2", "0.6")
    assert info.value.kind == "analyst" and info.value.data_year == "2026"
    assert "analyst quota of ana, data year 2026" in str(info.value)
    assert info.value.difference == Decimal("0.2")
    reserve(ledger, "q2-2025", "0.6", years=("2025",))  # another data year: its own share
    reserve(ledger, "q3", "0.6", analyst="bob")  # bob has his own quota
    ledger.set_analyst_quota("ana", Decimal("2"))
    reserve(ledger, "q2", "0.6")
    view = ledger.remaining("ana", ["2026"])
    assert (view.analyst_quota, view.year("2026").analyst_remaining) == (Decimal("2"), Decimal("0.8"))
    assert make_ledger().remaining("carol", ["2026"]).year("2026").analyst_remaining is None


# -- the life of an entry ------------------------------------------------------------------------------------


def test_reserve_is_idempotent_per_query(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(year_cap=Decimal("1"))
    first = ledger.reserve(
        "q1", analyst="ana", datasets=["b", "a", "a"], epsilon=Decimal("0.6"), data_years=Y
    )
    again = ledger.reserve("q1", analyst="ana", datasets=["a", "b"], epsilon=Decimal("0.6"), data_years=Y)
    assert first.created and not again.created
    assert again.datasets == ("a", "b") and again.state == RESERVED and again.data_years == Y
    assert ledger.spent("2026") == Decimal("0.6")
    with pytest.raises(QueryMismatch):
        ledger.reserve("q1", analyst="ana", datasets=["a", "b"], epsilon=Decimal("0.5"), data_years=Y)
    with pytest.raises(QueryMismatch, match="data years"):
        ledger.reserve("q1", analyst="ana", datasets=["a", "b"], epsilon=Decimal("0.6"), data_years=("2025",))


def test_refund_only_before_data_arrives(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    reserve(ledger, "nodata", "1")
    ledger.refund("nodata")
    ledger.refund("nodata")  # a second refund changes nothing
    assert ledger.spent("2026") == 0
    assert ledger.entry("nodata").state == REFUNDED  # type: ignore[union-attr]

    reserve(ledger, "data", "1")
    ledger.mark_data_arrived("data")
    with pytest.raises(InvalidTransition, match="data has arrived"):
        ledger.refund("data")
    ledger.fail("data")
    assert ledger.entry("data").state == SPENT_FAILED  # type: ignore[union-attr]
    assert ledger.spent("2026") == Decimal("1")  # failed after data: still spent
    with pytest.raises(InvalidTransition):
        ledger.refund("data")

    reserve(ledger, "done", "1")
    ledger.commit("done", {"cells": []})
    with pytest.raises(InvalidTransition):
        ledger.refund("done")
    with pytest.raises(UnknownQuery):
        ledger.refund("never-reserved")


def test_a_refunded_query_can_be_reserved_again(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(year_cap=Decimal("1"))
    reserve(ledger, "q1", "1", datasets=("a",), years=("2025", "2026"))
    ledger.refund("q1")
    assert ledger.spent("2025") == 0 and ledger.charged_years() == ()
    again = ledger.reserve(
        "q1", analyst="ana", datasets=["a"], epsilon=Decimal("1"), data_years=("2025", "2026")
    )
    assert again.created and again.state == RESERVED
    assert ledger.spent("2025") == Decimal("1") and ledger.spent("2026") == Decimal("1")
    with pytest.raises(BudgetExceeded):
        reserve(ledger, "q2", "0.1", datasets=("a",))


def test_everything_but_refunded_counts(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    for name in ("reserved", "charged", "failed", "refunded"):
        reserve(ledger, name, "1")
    ledger.commit("charged", {"ok": True})
    ledger.mark_data_arrived("failed")
    ledger.fail("failed")
    ledger.refund("refunded")
    assert ledger.spent("2026") == Decimal("3")
    assert ledger.remaining("ana").year("2026").remaining == Decimal("7")


def test_commit_stores_the_result_and_refetching_is_free(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    reserve(ledger, "q1", "1")
    assert ledger.result("q1") is None
    result = {"epsilon": "1", "cells": [{"value": 3, "low": 1.5}]}
    ledger.commit("q1", result)
    entry = ledger.entry("q1")
    assert entry is not None and entry.state == CHARGED and entry.data_arrived
    assert ledger.result("q1") == result
    ledger.commit("q1", result)  # the same result again: a no-op
    with pytest.raises(InvalidTransition, match="another result"):
        ledger.commit("q1", {"cells": []})
    assert ledger.result("q1") == result
    assert ledger.spent("2026") == Decimal("1")


def test_commit_is_atomic(make_ledger: Callable[..., Ledger], engine: sa.Engine) -> None:
    ledger = make_ledger()
    reserve(ledger, "q1", "1")
    # A result that cannot be stored (NaN is not JSON) leaves the entry reserved and no result behind.
    with pytest.raises(ValueError):
        ledger.commit("q1", {"value": float("nan")})
    # Force a failure after the state update, inside the transaction: the insert of a second result row.
    with engine.begin() as conn:
        conn.execute(
            sa.insert(results_table).values(query_id="q1", result_json="{}", stored_at=datetime.now(UTC))
        )
    with pytest.raises(sa.exc.IntegrityError):
        ledger.commit("q1", {"cells": []})
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(entries_table.c.state).where(entries_table.c.query_id == "q1")
        ).scalar_one()
    assert state == RESERVED  # the charge was rolled back with the failed insert


def test_fail_and_mark_need_a_reservation(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    reserve(ledger, "q1", "1")
    ledger.refund("q1")
    with pytest.raises(InvalidTransition):
        ledger.mark_data_arrived("q1")
    with pytest.raises(InvalidTransition):
        ledger.fail("q1")
    with pytest.raises(UnknownQuery):
        ledger.fail("nope")
    with pytest.raises(UnknownQuery):
        ledger.commit("nope", {})


# -- races ---------------------------------------------------------------------------------------------------


def race(ledger: Ledger, threads: int = 40) -> tuple[int, int, list[str]]:
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    outcome = {"ok": 0, "refused": 0}
    errors: list[str] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            # Half the queries read 2025 alone, half 2025 and 2026: 2025 holds room for ten in all.
            years = ("2025",) if i % 2 else ("2025", "2026")
            ledger.reserve(
                f"race-{i}",
                analyst=f"analyst-{i % 3}",
                datasets=["tax.wages"],
                epsilon=Decimal("0.1"),
                data_years=years,
            )
            key = "ok"
        except BudgetExceeded:
            key = "refused"
        except Exception as exc:  # any other error fails the test below with its text
            with lock:
                errors.append(repr(exc))
            return
        with lock:
            outcome[key] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    return outcome["ok"], outcome["refused"], errors


def test_budget_race_sqlite(tmp_path: Path, clock: Clock) -> None:
    eng = sqlite_engine(tmp_path / "race.db")
    _raced_ledger(eng, clock)
    eng.dispose()


def _raced_ledger(eng: sa.Engine, clock: Clock) -> Ledger:
    """40 concurrent reservations with room for 10 on `eng`: exactly 10 pass and nothing errs."""
    create_tables(eng)
    ledger = Ledger(eng, year_cap=Decimal("1.0"), default_analyst_quota=None, clock=clock)
    ok, refused, errors = race(ledger)
    assert errors == []
    assert (ok, refused) == (10, 30)
    assert ledger.spent("2025") == Decimal("1.0")
    assert ledger.spent("2026") <= Decimal("1.0")
    return ledger


@pytest.mark.postgres
def test_budget_race_postgres(postgres_url: str, clock: Clock) -> None:  # noqa: F811
    eng = sa.create_engine(postgres_url, pool_size=10, max_overflow=40)
    try:
        ledger = _raced_ledger(eng, clock)
        # The rest of the life cycle on PostgreSQL too.
        reserved = [e for e in (ledger.entry(f"race-{i}") for i in range(40)) if e is not None]
        first = reserved[0]
        ledger.commit(first.query_id, {"cells": [1, 2]})
        assert ledger.result(first.query_id) == {"cells": [1, 2]}
        ledger.refund(reserved[1].query_id)
        assert ledger.spent("2025") == Decimal("0.9")
    finally:
        eng.dispose()


@pytest.mark.mariadb
def test_budget_race_mariadb(mariadb_url: str, clock: Clock) -> None:  # noqa: F811
    eng = sa.create_engine(mariadb_url, pool_size=10, max_overflow=40)
    try:
        # No deadlocks between the data-year lock-row insert and FOR UPDATE: the helper asserts no errors.
        _raced_ledger(eng, clock)
    finally:
        eng.dispose()
