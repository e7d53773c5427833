"""What every request of one gateway process shares: settings, database, keys, ledger and audit trail.

Built once at start (`build_context`) and put on `app.state.context`; routes reach it through
`gateway.api.deps.ContextDep`, tests build their own and inject a transport for connector calls.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Request

from aggregation.engines import CellEngine, PolarsEngine
from audit.checkpoint import Checkpointer
from gateway.audit_trail import AuditTrail
from gateway.federation import Federation
from gateway.job_pool import JobPool
from gateway.limits import RunSlots
from gateway.settings import GatewaySettings
from privacy.ledger import Ledger


@dataclass
class GatewayContext:
    settings: GatewaySettings
    engine: sa.Engine
    gateway_key: Ed25519PrivateKey
    ledger: Ledger
    audit: AuditTrail
    transport: httpx.BaseTransport | None = None
    checkpointer: Checkpointer | None = None
    tls: ssl.SSLContext | None = None
    """mutual TLS toward connectors: the federation CA and the gateway's client certificate"""
    running: set[str] = field(default_factory=set)
    run_slots: RunSlots = field(default_factory=RunSlots)
    """each analyst's runs in progress (`FEDGATE_MAX_CONCURRENT_RUNS_PER_ANALYST`)"""
    _federation: Federation | None = field(default=None, repr=False)
    _federation_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cell_engine: CellEngine | None = field(default=None, repr=False)
    _job_pool: JobPool | None = field(default=None, repr=False)
    scheduler: Any = field(default=None, repr=False)
    """the monthly schedules' scheduler (`gateway.schedules.Scheduler`), while the app runs"""

    def job_pool(self) -> JobPool:
        """The process's job workers, started on first use (`FEDGATE_JOB_WORKERS`)."""
        from gateway import jobs  # the jobs run through services that import this module

        with self._federation_lock:
            if self._job_pool is None:
                self._job_pool = JobPool(lambda job_id: jobs.work(self, job_id), self.settings.job_workers)
            return self._job_pool

    def stop_jobs(self, *, wait: bool = True) -> None:
        with self._federation_lock:
            pool, self._job_pool = self._job_pool, None
        if pool is not None:
            pool.shutdown(wait=wait)

    def federation(self) -> Federation:
        """The long-lived connector links, made on first use with this context's key, transport and TLS."""
        with self._federation_lock:
            if self._federation is None:
                self._federation = Federation(
                    gateway_key=self.gateway_key,
                    timeout=self.settings.connector_timeout_seconds,
                    transport=self.transport,
                    verify=self.tls or True,
                )
            return self._federation

    def cell_engine(self) -> CellEngine:
        """The engine the runner joins and aggregates on (`FEDGATE_ENGINE`), made on first use."""
        with self._federation_lock:
            if self._cell_engine is None:
                settings = self.settings
                if settings.engine == "spark":
                    # Imported only here: a gateway on the default engine never loads PySpark.
                    from aggregation.engines.spark_engine import SparkEngine

                    staging = settings.spark_staging_dir or settings.state_dir / "spark-staging"
                    self._cell_engine = SparkEngine(master=settings.spark_master, staging_dir=staging)
                else:
                    self._cell_engine = PolarsEngine(
                        memory_bytes=settings.engine_memory_mb * 1024 * 1024,
                        spill_dir=settings.engine_spill_dir or settings.state_dir / "spill",
                    )
            return self._cell_engine


def get_context(request: Request) -> GatewayContext:
    ctx = getattr(request.app.state, "context", None)
    assert isinstance(ctx, GatewayContext), "the app was built without a gateway context"
    return ctx
