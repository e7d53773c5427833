"""Errors raised by the privacy package.

    PrivacyError
     ├── SpecError              a release specification is invalid (names the field and what is expected)
     ├── PrivacyMapExceeded     OpenDP's privacy map says the prepared release would spend more than allowed
     ├── ReleaseInputError      the frame handed to a prepared release does not fit its specification
     ├── ReleaseAlreadyRun      a prepared release was asked to draw noise a second time
     └── LedgerError
          ├── BudgetExceeded    a reservation would pass a cap: says requested, remaining and the difference
          ├── UnknownQuery      the ledger holds no entry for a query id
          ├── InvalidTransition the entry's state does not allow the operation (e.g. refund after data)
          └── QueryMismatch     a query id was reserved before with other analyst, datasets or epsilon

Messages never carry data-dependent numbers: budgets, scales and epsilons are public, row counts are not.
"""

from __future__ import annotations

from decimal import Decimal


class PrivacyError(Exception):
    """Base of every privacy error."""


class SpecError(PrivacyError, ValueError):
    """A release specification is invalid."""


class PrivacyMapExceeded(PrivacyError):
    """OpenDP's privacy map for the prepared measurement exceeds the epsilon the spec allows.

    Raised before any data is touched; the fix is a larger epsilon or larger noise scales.
    """

    def __init__(self, allowed: Decimal, mapped: Decimal, d_in: int) -> None:
        self.allowed = allowed
        self.mapped = mapped
        self.d_in = d_in
        super().__init__(
            f"OpenDP's privacy map gives epsilon={mapped} for neighbouring frames up to {d_in} row(s) apart, "
            f"more than the allowed epsilon={allowed}; raise epsilon or the noise scales"
        )


class ReleaseInputError(PrivacyError, ValueError):
    """The frame does not fit the prepared release (a missing column, a wrong type, a null measure)."""


class ReleaseAlreadyRun(PrivacyError):
    """A prepared release draws noise once; a retry must re-serve the stored result instead."""


class LedgerError(PrivacyError):
    """Base of the budget ledger's errors."""


class BudgetExceeded(LedgerError):
    """A reservation would pass a cap.

    ``scope`` names the cap in words ("federation window 2026", "multi-year 2022-2026", "dataset tax.wages",
    "analyst quota of alice"); ``kind`` is one of "window", "multi_year", "dataset", "analyst".
    """

    def __init__(self, scope: str, requested: Decimal, remaining: Decimal, *, kind: str = "window") -> None:
        self.scope = scope
        self.kind = kind
        self.requested = requested
        self.remaining = remaining
        super().__init__(
            f"Not enough privacy budget in {scope}: requested epsilon={requested}, "
            f"remaining epsilon={remaining}; the request exceeds the remaining budget by {self.difference}."
        )

    @property
    def difference(self) -> Decimal:
        """How much more than the remaining budget was requested."""
        return self.requested - self.remaining


class UnknownQuery(LedgerError, KeyError):
    """The ledger holds no entry for this query id."""

    def __init__(self, query_id: str) -> None:
        self.query_id = query_id
        super().__init__(f"the ledger holds no entry for query {query_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidTransition(LedgerError):
    """The entry's state does not allow the requested operation."""

    def __init__(self, query_id: str, state: str, operation: str, reason: str) -> None:
        self.query_id = query_id
        self.state = state
        self.operation = operation
        super().__init__(f"cannot {operation} query {query_id!r} in state {state!r}: {reason}")


class QueryMismatch(LedgerError):
    """A query id was reserved before with a different analyst, dataset list or epsilon."""
