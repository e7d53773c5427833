"""The dependency a route that runs queries takes: one of the caller's concurrent-run slots.

The slot is held for the request and given back when it ends, whatever the outcome; past the limit the
request is refused (429 `rate_limited`, with the limit) before anything is read or reserved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends

from gateway.api.deps import Analyst, ContextDep
from gateway.auth import Principal

__all__ = ["RunSlot"]


def _run_slot(ctx: ContextDep, analyst: Analyst) -> Iterator[Principal]:
    ctx.run_slots.acquire(analyst.name, ctx.settings.max_concurrent_runs_per_analyst)
    try:
        yield analyst
    finally:
        ctx.run_slots.release(analyst.name)


RunSlot = Annotated[Principal, Depends(_run_slot)]
