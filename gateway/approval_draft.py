"""The approval a department signs for one query, built in one place.

The Python client (and so `fedgate approve`) and the console's approvals page both build the approval
here from the query's spec and the department's required scopes, so the page and the command sign the
same bytes and show the same digest: SHA-256 of `Approval.signing_bytes()`, what an admin compares.

Approvals carry no expiry yet: the connector and the gateway enforce one once signed approvals always
carry `expires_at` (then it becomes a parameter here, and the page's form and `fedgate approve` pass it).
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregation.query import QuerySpec
from connectors.protocol import Approval, ApprovedDataset, sha256_hex


def draft_approval(spec: QuerySpec, department: str, scopes: Sequence[ApprovedDataset]) -> Approval:
    """What `department` consents to for `spec`: exactly the datasets and fields the query needs of it."""
    # The department signs the baseline too, so its connector serves exactly the periods it approved.
    baseline = getattr(spec, "baseline", None)
    return Approval(
        department=department,
        query_id=spec.query_id,
        query_digest=spec.digest,
        unit=spec.unit,
        period_start=spec.period_start,
        period_end=spec.period_end,
        baseline_start=None if baseline is None else baseline.period_start,
        baseline_end=None if baseline is None else baseline.period_end,
        datasets=tuple(scopes),
        epsilon=spec.epsilon,
    )


def signing_digest(approval: Approval) -> str:
    """SHA-256 (hex) of the exact bytes an approval's Ed25519 signature covers."""
    return sha256_hex(approval.signing_bytes())
