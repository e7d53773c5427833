"""The federation budget ledger: exact amounts, caps and their messages, the entry life cycle, races."""

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
    Ledger,
    create_tables,
    entries_table,
    from_nano,
    results_table,
    to_nano,
)


class Clock:
    """A settable clock, so tests can cross a window boundary."""

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
            "window_cap": Decimal("10"),
            "multi_year_cap": Decimal("30"),
            "default_analyst_quota": None,
            "clock": clock,
        }
        options.update(kwargs)
        return Ledger(engine, **options)  # type: ignore[arg-type]

    return make


# -- exact arithmetic ---------------------------------------------------------------------------------------

epsilons = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("0.5"), places=9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amounts=st.lists(epsilons, min_size=1, max_size=40))
def test_sums_of_many_small_epsilons_are_exact(
    tmp_path_factory: pytest.TempPathFactory, amounts: list[Decimal]
) -> None:
    eng = sqlite_engine(tmp_path_factory.mktemp("exact") / "ledger.db")
    create_tables(eng)
    ledger = Ledger(eng, window_cap=Decimal("100"), multi_year_cap=Decimal("100"), default_analyst_quota=None)
    for i, amount in enumerate(amounts):
        ledger.reserve(f"q{i}", analyst="ana", datasets=["tax.wages"], epsilon=amount)
    assert ledger.spent() == sum(amounts, Decimal(0))
    view = ledger.remaining("ana")
    assert view.window_remaining == Decimal("100") - sum(amounts, Decimal(0))
    assert view.window_remaining + sum(amounts, Decimal(0)) == Decimal("100")
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
    ledger = make_ledger(window_cap=Decimal("0.3"))
    for i in range(3):
        ledger.reserve(f"q{i}", analyst="ana", datasets=[], epsilon=Decimal("0.1"))
    # Float arithmetic would say 0.1 + 0.1 + 0.1 > 0.3; exact arithmetic leaves exactly nothing.
    assert ledger.spent() == Decimal("0.3")
    assert ledger.remaining("ana").window_remaining == 0


# -- caps and the BudgetExceeded message ---------------------------------------------------------------------


def test_window_cap_message_says_requested_remaining_and_difference(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger(window_cap=Decimal("1.0"))
    ledger.reserve("q1", analyst="ana", datasets=["tax.wages"], epsilon=Decimal("0.7"))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("q2", analyst="ana", datasets=["tax.wages"], epsilon=Decimal("0.5"))
    err = info.value
    assert (err.kind, err.requested, err.remaining, err.difference) == (
        "window",
        Decimal("0.5"),
        Decimal("0.3"),
        Decimal("0.2"),
    )
    message = str(err)
    assert "federation window 2026" in message
    assert "requested epsilon=0.5" in message
    assert "remaining epsilon=0.3" in message
    assert "by 0.2" in message
    assert ledger.entry("q2") is None
    assert ledger.spent() == Decimal("0.7")


def test_dataset_cap_is_per_dataset(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.set_dataset_cap("tax.wages", Decimal("1"))
    ledger.reserve("q1", analyst="ana", datasets=["tax.wages", "civil.register"], epsilon=Decimal("0.8"))
    ledger.reserve("q2", analyst="ana", datasets=["civil.register"], epsilon=Decimal("0.8"))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("q3", analyst="bob", datasets=["civil.register", "tax.wages"], epsilon=Decimal("0.5"))
    assert info.value.kind == "dataset"
    assert info.value.scope == "dataset tax.wages"
    assert info.value.remaining == Decimal("0.2")
    assert "dataset tax.wages" in str(info.value)
    view = ledger.remaining("ana")
    assert view.datasets == {"tax.wages": Decimal("0.2")}
    ledger.set_dataset_cap("tax.wages", None)
    ledger.reserve("q3", analyst="bob", datasets=["civil.register", "tax.wages"], epsilon=Decimal("0.5"))


def test_analyst_quota_default_and_override(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(default_analyst_quota=Decimal("1"))
    ledger.reserve("q1", analyst="ana", datasets=[], epsilon=Decimal("0.6"))
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("q2", analyst="ana", datasets=[], epsilon=Decimal("0.6"))
    assert info.value.kind == "analyst"
    assert "analyst quota of ana" in str(info.value)
    assert info.value.difference == Decimal("0.2")
    ledger.reserve("q3", analyst="bob", datasets=[], epsilon=Decimal("0.6"))  # bob has his own quota
    ledger.set_analyst_quota("ana", Decimal("2"))
    ledger.reserve("q2", analyst="ana", datasets=[], epsilon=Decimal("0.6"))
    view = ledger.remaining("ana")
    assert (view.analyst_quota, view.analyst_remaining) == (Decimal("2"), Decimal("0.8"))
    assert make_ledger().remaining("carol").analyst_remaining is None


def test_new_window_gets_a_fresh_cap_but_the_multi_year_cap_remembers(
    make_ledger: Callable[..., Ledger], clock: Clock
) -> None:
    ledger = make_ledger(window_cap=Decimal("1"), multi_year_cap=Decimal("2.5"), multi_year_span=3)
    ledger.reserve("q2026", analyst="ana", datasets=[], epsilon=Decimal("1"))
    clock.moment = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert ledger.current_window() == "2027"
    ledger.reserve("q2027", analyst="ana", datasets=[], epsilon=Decimal("1"))
    clock.moment = datetime(2028, 3, 1, tzinfo=UTC)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("q2028", analyst="ana", datasets=[], epsilon=Decimal("1"))
    assert info.value.kind == "multi_year"
    assert "multi-year 2026-2028" in str(info.value)
    assert info.value.remaining == Decimal("0.5")
    assert ledger.spent("2026") == Decimal("1")
    assert ledger.spent() == 0
    clock.moment = datetime(2029, 3, 1, tzinfo=UTC)  # 2026 has left the three-year span
    ledger.reserve("q2029", analyst="ana", datasets=[], epsilon=Decimal("1"))


# -- the life of an entry ------------------------------------------------------------------------------------


def test_reserve_is_idempotent_per_query(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(window_cap=Decimal("1"))
    first = ledger.reserve("q1", analyst="ana", datasets=["b", "a", "a"], epsilon=Decimal("0.6"))
    again = ledger.reserve("q1", analyst="ana", datasets=["a", "b"], epsilon=Decimal("0.6"))
    assert first.created and not again.created
    assert again.datasets == ("a", "b") and again.state == RESERVED
    assert ledger.spent() == Decimal("0.6")
    with pytest.raises(QueryMismatch):
        ledger.reserve("q1", analyst="ana", datasets=["a", "b"], epsilon=Decimal("0.5"))


def test_refund_only_before_data_arrives(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.reserve("nodata", analyst="ana", datasets=[], epsilon=Decimal("1"))
    ledger.refund("nodata")
    ledger.refund("nodata")  # a second refund changes nothing
    assert ledger.spent() == 0
    assert ledger.entry("nodata").state == REFUNDED  # type: ignore[union-attr]

    ledger.reserve("data", analyst="ana", datasets=[], epsilon=Decimal("1"))
    ledger.mark_data_arrived("data")
    with pytest.raises(InvalidTransition, match="data has arrived"):
        ledger.refund("data")
    ledger.fail("data")
    assert ledger.entry("data").state == SPENT_FAILED  # type: ignore[union-attr]
    assert ledger.spent() == Decimal("1")  # failed after data: still spent
    with pytest.raises(InvalidTransition):
        ledger.refund("data")

    ledger.reserve("done", analyst="ana", datasets=[], epsilon=Decimal("1"))
    ledger.commit("done", {"cells": []})
    with pytest.raises(InvalidTransition):
        ledger.refund("done")
    with pytest.raises(UnknownQuery):
        ledger.refund("never-reserved")


def test_a_refunded_query_can_be_reserved_again(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(window_cap=Decimal("1"))
    ledger.reserve("q1", analyst="ana", datasets=["a"], epsilon=Decimal("1"))
    ledger.refund("q1")
    again = ledger.reserve("q1", analyst="ana", datasets=["a"], epsilon=Decimal("1"))
    assert again.created and again.state == RESERVED
    assert ledger.spent() == Decimal("1")
    with pytest.raises(BudgetExceeded):
        ledger.reserve("q2", analyst="ana", datasets=["a"], epsilon=Decimal("0.1"))


def test_everything_but_refunded_counts(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    for name in ("reserved", "charged", "failed", "refunded"):
        ledger.reserve(name, analyst="ana", datasets=[], epsilon=Decimal("1"))
    ledger.commit("charged", {"ok": True})
    ledger.mark_data_arrived("failed")
    ledger.fail("failed")
    ledger.refund("refunded")
    assert ledger.spent() == Decimal("3")
    assert ledger.remaining("ana").window_remaining == Decimal("7")


def test_commit_stores_the_result_and_refetching_is_free(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.reserve("q1", analyst="ana", datasets=[], epsilon=Decimal("1"))
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
    assert ledger.spent() == Decimal("1")


def test_commit_is_atomic(make_ledger: Callable[..., Ledger], engine: sa.Engine) -> None:
    ledger = make_ledger()
    ledger.reserve("q1", analyst="ana", datasets=[], epsilon=Decimal("1"))
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
    ledger.reserve("q1", analyst="ana", datasets=[], epsilon=Decimal("1"))
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
            ledger.reserve(
                f"race-{i}", analyst=f"analyst-{i % 3}", datasets=["tax.wages"], epsilon=Decimal("0.1")
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
    ledger = Ledger(
        eng, window_cap=Decimal("1.0"), multi_year_cap=Decimal("5"), default_analyst_quota=None, clock=clock
    )
    ok, refused, errors = race(ledger)
    assert errors == []
    assert (ok, refused) == (10, 30)
    assert ledger.spent() == Decimal("1.0")
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
        assert ledger.spent() == Decimal("0.9")
    finally:
        eng.dispose()


@pytest.mark.mariadb
def test_budget_race_mariadb(mariadb_url: str, clock: Clock) -> None:  # noqa: F811
    eng = sa.create_engine(mariadb_url, pool_size=10, max_overflow=40)
    try:
        # No deadlocks between the window-row insert and FOR UPDATE: the helper asserts no errors.
        _raced_ledger(eng, clock)
    finally:
        eng.dispose()
