"""Budget settings that people change: analysts' quotas (the operator) and dataset caps (departments).

The amounts live in the budget ledger (`privacy.ledger`), beside the gateway's tables but written by the
ledger's own transactions, so each change is audited *before* it is made: once its entry is durable the
ledger changes; if the entry cannot be written nothing changes (`AuditUnavailable`). Amounts are checked
first, so a change that is audited is one the ledger accepts.
"""

from __future__ import annotations

from decimal import Decimal

from gateway.audit_trail import AuditTrail
from gateway.auth import Principal
from gateway.errors import Forbidden, Invalid
from gateway.events import DatasetCapChanged, QuotaChanged
from gateway.registry import get_connector
from privacy.ledger import EPSILON_QUANTUM, Ledger, to_nano

__all__ = ["set_dataset_cap", "set_quota"]


def _checked(epsilon: Decimal | None) -> str | None:
    if epsilon is None:
        return None
    try:
        units = to_nano(epsilon)
    except (TypeError, ValueError):
        raise Invalid(f"epsilon must be a whole multiple of {EPSILON_QUANTUM}", "epsilon") from None
    if units < 0:
        raise Invalid("epsilon must be >= 0", "epsilon")
    return str(epsilon)


def set_quota(
    trail: AuditTrail, ledger: Ledger, analyst: str, epsilon: Decimal | None, by: Principal
) -> None:
    """Set `analyst`'s quota per window (None: back to the default quota)."""
    amount = _checked(epsilon)
    trail.record(QuotaChanged(actor=by.name, analyst=analyst, epsilon=amount))
    ledger.set_analyst_quota(analyst, epsilon)


def set_dataset_cap(
    trail: AuditTrail, ledger: Ledger, dataset: str, epsilon: Decimal | None, by: Principal
) -> None:
    """A department caps the epsilon any window may spend on one of its own datasets (`connector.dataset`)."""
    amount = _checked(epsilon)
    connector = get_connector(trail.log.engine, dataset.partition(".")[0])
    if connector is None or connector.department != by.department:
        raise Forbidden("you cap only your own department's datasets", "dataset")
    trail.record(DatasetCapChanged(actor=by.name, dataset=dataset, epsilon=amount))
    ledger.set_dataset_cap(dataset, epsilon)
