"""The progress seam: how a run tells whoever waits on it which step it is at, and learns to stop.

    progress.begin(total)                   the number of steps the run will take
    progress.step("reserve")                a step starts (a public label, never a data-dependent number);
                                            `Cancelled` if the run was asked to stop and may still stop
    progress.step("release", stoppable=False)   past the point where data arrived: report only

The runner, indicator and pack code call it; a job (`gateway.jobs`) records each step on its row, the
synchronous routes pass `NO_PROGRESS`. A run asked to stop raises `Cancelled` from its next stoppable
step, so the one failure path of the runner and the indicators settles what it had reserved by the
refund rule (`gateway.lifecycle`): refunded where no data arrived. Once data has arrived the run goes
on to its release, since its budget is spent either way.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_PROGRESS", "NoProgress", "Progress", "Within"]


class Progress(Protocol):
    def begin(self, total: int) -> None: ...

    def step(self, label: str, *, stoppable: bool = True) -> None: ...


class NoProgress:
    """Nobody is watching and nothing can ask the run to stop (the synchronous routes)."""

    def begin(self, total: int) -> None:
        return None

    def step(self, label: str, *, stoppable: bool = True) -> None:
        return None


NO_PROGRESS: Progress = NoProgress()


class Within:
    """The steps of one part of a larger run (a query of a pack): counted in the whole run's total,
    labelled with the part's name; the part's own `begin` is ignored (the whole run counted it)."""

    def __init__(self, outer: Progress, prefix: str) -> None:
        self.outer = outer
        self.prefix = prefix

    def begin(self, total: int) -> None:
        return None

    def step(self, label: str, *, stoppable: bool = True) -> None:
        self.outer.step(f"{self.prefix}: {label}", stoppable=stoppable)
