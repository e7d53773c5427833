"""The gateway's domain errors: what went wrong, in the terms of the domain, with no HTTP in them.

    GatewayError(message, field)            code: one of the fixed `ErrorCode`s
     ├── Unauthenticated                    no valid, unexpired, unrevoked API key
     ├── Forbidden                          the caller's role or department may not do this
     ├── NotFound                           no such thing (or not one the caller may learn exists)
     ├── Invalid                            an input is refused; `field` names it
     │    └── ApprovalInvalid               a department's signature or approval that does not hold
     ├── Conflict(reason)                   the thing is not in a state that allows this
     │    └── Cancelled                     a job's run stopped because it was cancelled
     ├── NotApproved(waiting)               a query waits for departments (`waiting`: who, and why)
     ├── BudgetRefused(scope, requested, remaining)
     ├── RateLimited
     ├── AuditUnavailable                   the audit log cannot be written: nothing was done
     ├── ConnectorUnavailable               a connector does not answer (nothing charged)
     └── ConnectorFailed                    a connector failed after data had arrived (budget spent)

Domain modules raise these; `gateway.api.errors` alone turns them into HTTP statuses and the one JSON
error shape. Messages never carry data-dependent numbers, raw identifiers, tokens or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from privacy.errors import BudgetExceeded

__all__ = [
    "ApprovalInvalid",
    "AuditUnavailable",
    "BudgetRefused",
    "Cancelled",
    "Conflict",
    "ConnectorFailed",
    "ConnectorUnavailable",
    "ErrorCode",
    "Forbidden",
    "GatewayError",
    "Invalid",
    "NotApproved",
    "NotFound",
    "RateLimited",
    "Unauthenticated",
]


class ErrorCode(StrEnum):
    """The fixed set of error codes; no other code ever leaves the gateway."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    CONFLICT = "conflict"
    BUDGET_EXCEEDED = "budget_exceeded"
    NOT_APPROVED = "not_approved"
    CONNECTOR_UNAVAILABLE = "connector_unavailable"
    CONNECTOR_ERROR = "connector_error"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class GatewayError(Exception):
    """A refusal: one of the fixed codes, a public message and, where one input is at fault, its field."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{self.code}: {message}")


class Unauthenticated(GatewayError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(GatewayError):
    code = ErrorCode.FORBIDDEN


class NotFound(GatewayError):
    code = ErrorCode.NOT_FOUND


class Invalid(GatewayError):
    """An input is refused; the message says what is expected."""

    code = ErrorCode.INVALID_REQUEST


class ApprovalInvalid(Invalid):
    """A department's signed approval or rule that is not signed by its key or does not cover the query."""

    code = ErrorCode.NOT_APPROVED


class Conflict(GatewayError):
    """The thing exists but its state does not allow this; `reason` is the state or the clash."""

    code = ErrorCode.CONFLICT

    def __init__(self, message: str, field: str | None = None, *, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, field)


class Cancelled(Conflict):
    """A run stopped at a step because its job was cancelled (`gateway.progress`)."""

    def __init__(self) -> None:
        super().__init__(
            "the job was cancelled; what no data had reached was refunded, the rest stays charged",
            None,
            reason="cancelled",
        )


class NotApproved(GatewayError):
    """A query (or several) still waits: `waiting` maps each to who it waits for or who rejected it."""

    code = ErrorCode.NOT_APPROVED

    def __init__(self, message: str, field: str | None = None, *, waiting: Mapping[str, str]) -> None:
        self.waiting = dict(waiting)
        super().__init__(message, field)


class BudgetRefused(GatewayError):
    """Not enough budget: `requested` and `remaining` in `scope` (a data year's cap, a dataset's, a quota),
    `data_year` the data year whose budget is spent."""

    code = ErrorCode.BUDGET_EXCEEDED

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        requested: Decimal,
        remaining: Decimal,
        data_year: str | None = None,
    ) -> None:
        self.scope = scope
        self.requested = requested
        self.remaining = remaining
        self.data_year = data_year
        super().__init__(message, "epsilon")

    @classmethod
    def from_ledger(cls, exc: BudgetExceeded) -> BudgetRefused:
        """The ledger's refusal, as the gateway answers it."""
        return cls(
            str(exc),
            scope=exc.scope,
            requested=exc.requested,
            remaining=exc.remaining,
            data_year=exc.data_year,
        )


class RateLimited(GatewayError):
    code = ErrorCode.RATE_LIMITED


class AuditUnavailable(GatewayError):
    """The audit log cannot be written, so the change it would record was not made."""

    code = ErrorCode.AUDIT_UNAVAILABLE


class ConnectorUnavailable(GatewayError):
    code = ErrorCode.CONNECTOR_UNAVAILABLE


class ConnectorFailed(GatewayError):
    code = ErrorCode.CONNECTOR_ERROR
