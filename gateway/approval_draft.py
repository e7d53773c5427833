"""The approval a department signs for one query, built in one place.

The Python client (and so `fedgate approve`) and the console's approvals page both build the approval
here from the query's spec and the department's required scopes, so the page and the command sign the
same bytes and show the same digest: SHA-256 of `Approval.signing_bytes()`, what an admin compares.

Every approval carries a signed issue time and expiry (`connectors.protocol`: 14 days by default, at most
30). A draft's issue time is the start of the current UTC hour, not the second it was built: the page built
when the inbox opened, the approval the gateway rebuilds when the signature is posted and the draft
`fedgate approve` signs all have the same bytes within that hour (across an hour the page says "reload,
sign again").
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aggregation.query import QuerySpec
from connectors.protocol import Approval, ApprovedDataset, sha256_hex

ISSUE_GRANULARITY_SECONDS = 3600


def draft_issue_time(now: float | None = None) -> int:
    """The issue time a draft built at `now` carries: the start of that UTC hour."""
    moment = int(time.time() if now is None else now)
    return moment - moment % ISSUE_GRANULARITY_SECONDS


def draft_approval(
    spec: QuerySpec,
    department: str,
    scopes: Sequence[ApprovedDataset],
    *,
    expires_at: int | None = None,
    now: float | None = None,
) -> Approval:
    """What `department` consents to for `spec`: exactly the datasets and fields the query needs of it,
    until `expires_at` (the protocol's short default when None)."""
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
        issued_at=draft_issue_time(now),
        expires_at=expires_at,
    )


def signing_digest(approval: Approval) -> str:
    """SHA-256 (hex) of the exact bytes an approval's Ed25519 signature covers."""
    return sha256_hex(approval.signing_bytes())
