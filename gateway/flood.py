"""Rate-limiting unauthenticated requests per source, so a flood cannot fill the audit log.

Within each window a source's first `burst` requests without a valid key are audited one by one; the
rest are refused with 429 and only counted. When the source's window ends, one entry records how many were
suppressed. Request counts are about callers, not about anyone's data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    start: float
    seen: int = 0
    suppressed: int = 0


class FloodGate:
    def __init__(
        self, *, burst: int = 30, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Window] = {}

    def admit(self, source: str) -> tuple[bool, dict[str, object] | None]:
        """Whether to serve (and audit individually) an unauthenticated request from `source`, and the
        summary of the source's previous window to record, if that window just ended with suppressions."""
        now = self._clock()
        summary = None
        with self._lock:
            window = self._sources.get(source)
            if window is None or now - window.start >= self.window_seconds:
                if window is not None and window.suppressed:
                    summary = {
                        "client": source,
                        "suppressed": window.suppressed,
                        "window_seconds": self.window_seconds,
                    }
                window = self._sources[source] = _Window(start=now)
                if len(self._sources) > 10_000:
                    self._forget_old(now)
            window.seen += 1
            if window.seen <= self.burst:
                return True, summary
            window.suppressed += 1
            return False, summary

    def _forget_old(self, now: float) -> None:
        for source, window in list(self._sources.items()):
            if now - window.start >= self.window_seconds and not window.suppressed:
                del self._sources[source]
