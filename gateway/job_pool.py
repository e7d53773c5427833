"""The gateway process's bounded pool of job workers (`FEDGATE_JOB_WORKERS` threads).

The queue itself is the `jobs` table: the pool is handed job ids, and a job it could not start yet (its
analyst's run slots are all taken) is handed back after a short pause. Stopping the pool lets running
jobs finish; a process that dies instead leaves them to the start-up recovery (`gateway.jobs`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

__all__ = ["JobPool"]

log = structlog.get_logger("fedgate.jobs")

RETRY_SECONDS = 0.5


class JobPool:
    def __init__(self, work: Callable[[str], bool], workers: int) -> None:
        """`work(job_id)` runs one job; False means "not now, try again shortly"."""
        self._work = work
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedgate-job")
        self._lock = threading.Lock()
        self._stopped = False
        self._timers: set[threading.Timer] = set()

    def enqueue(self, job_id: str) -> None:
        with self._lock:
            if self._stopped:
                return
            self._executor.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            done = self._work(job_id)
        except Exception as exc:  # a job's own failures are stored on it; this is the pool's last guard
            log.error("job.worker_error", job_id=job_id, error_type=type(exc).__name__)
            return
        if not done:
            self._later(job_id)

    def _later(self, job_id: str) -> None:
        def again() -> None:
            with self._lock:
                self._timers.discard(timer)
            self.enqueue(job_id)

        timer = threading.Timer(RETRY_SECONDS, again)
        timer.daemon = True
        with self._lock:
            if self._stopped:
                return
            self._timers.add(timer)
        timer.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Take no more jobs; with `wait`, let the running ones finish."""
        with self._lock:
            self._stopped = True
            timers = list(self._timers)
        for t in timers:
            t.cancel()
        self._executor.shutdown(wait=wait, cancel_futures=True)
