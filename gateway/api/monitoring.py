"""Routes: the monitoring configuration the indicators are built from (the operator sets it, all read it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response, status
from pydantic import BaseModel, Field

from gateway import monitoring
from gateway.api import examples
from gateway.api.deps import ContextDep, CurrentPrincipal, Operator
from gateway.api.errors import error_responses
from gateway.errors import NotFound
from gateway.registry import catalog

router = APIRouter(prefix="/v1", tags=["monitoring"])

_MAX_KEYS = 64


class MonitoringOut(BaseModel):
    """One version of the monitoring configuration: public policy only."""

    version: int = Field(description="the configuration's version, from 1")
    config_digest: str = Field(description="SHA-256 of the configuration's canonical JSON (RFC 8785)")
    source: str = Field(description="the file it was read from at start, or upload")
    created_by: str = Field(description="who set it (the operator, or start-up for a file)")
    created_at: datetime = Field(description="when it was set")
    config: dict[str, Any] = Field(
        description="the configuration (fedgate-monitoring/1): income proxy, bounds, edges, groups"
    )


class MonitoringVersionsOut(BaseModel):
    """Every version of the monitoring configuration."""

    versions: list[MonitoringOut] = Field(description="oldest first; the last is in force")


def monitoring_out(record: monitoring.MonitoringRecord) -> MonitoringOut:
    return MonitoringOut(
        version=record.version,
        config_digest=record.digest,
        source=record.source,
        created_by=record.created_by,
        created_at=record.created_at,
        config=record.config.model_dump(mode="json"),
    )


@router.get("/monitoring", responses=error_responses(404), response_model=MonitoringOut)
def get_monitoring(ctx: ContextDep, who: CurrentPrincipal) -> MonitoringOut:
    """The monitoring configuration in force."""
    record = monitoring.current(ctx.engine)
    if record is None:
        raise NotFound(
            "no monitoring configuration is loaded; the operator sets one with "
            "`fedgate indicators configure FILE`",
        )
    return monitoring_out(record)


@router.get("/monitoring/versions", responses=error_responses(), response_model=MonitoringVersionsOut)
def list_versions(ctx: ContextDep, who: CurrentPrincipal) -> MonitoringVersionsOut:
    """Every version, oldest first (each stays readable: past runs were built from it)."""
    records = monitoring.history(ctx.engine)
    return MonitoringVersionsOut(versions=[monitoring_out(r) for r in records])


@router.get(
    "/monitoring/versions/{version}", responses=error_responses(404, 422), response_model=MonitoringOut
)
def get_version(
    version: Annotated[int, Path(ge=1, le=2**31 - 1)], ctx: ContextDep, who: CurrentPrincipal
) -> MonitoringOut:
    """One stored version."""
    record = monitoring.get(ctx.engine, version)
    return monitoring_out(record)


@router.put(
    "/monitoring",
    responses=error_responses(403, 409, 413, 422),
    response_model=MonitoringOut,
    status_code=status.HTTP_201_CREATED,
)
def set_monitoring(
    body: Annotated[dict[str, Any], Body(max_length=_MAX_KEYS, openapi_examples=examples.MONITORING)],
    ctx: ContextDep,
    operator: Operator,
    response: Response,
) -> MonitoringOut:
    """Set the monitoring configuration (the YAML file's content as JSON). It is checked against the
    catalog (422 naming each field the catalog lacks) and stored as a new version, audited; the same
    configuration again changes nothing (200)."""
    record, created = monitoring.upload(ctx, body, catalog(ctx.engine), by=operator.name)
    if not created:
        response.status_code = status.HTTP_200_OK
    return monitoring_out(record)
