"""Routes: the operator's endpoint allow-list, connector registration, and the analysts' catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.concurrency import run_in_threadpool

from aggregation.query import SIZE_BAND
from gateway import registry
from gateway.api.schemas import CatalogOut, ConnectorIn, ConnectorOut, ConnectorsOut, EndpointIn, EndpointsOut
from gateway.auth import Principal, Role
from gateway.context import ContextDep
from gateway.deps import require_roles
from gateway.errors import error_responses

router = APIRouter(prefix="/v1", tags=["registry"], responses=error_responses(401, 403, 404, 422))

Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
DepartmentAdmin = Annotated[Principal, Depends(require_roles(Role.DEPARTMENT_ADMIN))]
Overseer = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN, Role.AUDITOR))]
Anyone = Annotated[
    Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN, Role.AUDITOR, Role.ANALYST))
]

PROXY_NOTE = (
    "Disposable income is a documented proxy built from what departments hold (wages, business income, "
    "pensions, transfers, minus personal contributions); no department holds property income."
)


def _out(record: registry.ConnectorRecord) -> ConnectorOut:
    return ConnectorOut(**record.public_view())


@router.post("/endpoints", response_model=EndpointsOut, status_code=status.HTTP_201_CREATED)
async def allow_endpoint(body: EndpointIn, ctx: ContextDep, operator: Operator) -> EndpointsOut:
    """Put a connector endpoint on the allow-list (the gateway fetches no other URL)."""
    url = await run_in_threadpool(registry.allow_endpoint, ctx.engine, body.url, operator)
    await run_in_threadpool(ctx.audit.record, "endpoint.allowed", actor=operator.name, endpoint=url)
    return EndpointsOut(endpoints=await run_in_threadpool(registry.list_endpoints, ctx.engine))


@router.delete("/endpoints", response_model=EndpointsOut)
async def remove_endpoint(
    ctx: ContextDep, operator: Operator, url: Annotated[str, Query(max_length=512)]
) -> EndpointsOut:
    """Take an endpoint off the allow-list (404 if it is not on it)."""
    removed = await run_in_threadpool(registry.remove_endpoint, ctx.engine, url)
    await run_in_threadpool(ctx.audit.record, "endpoint.removed", actor=operator.name, endpoint=removed)
    return EndpointsOut(endpoints=await run_in_threadpool(registry.list_endpoints, ctx.engine))


@router.get("/endpoints", response_model=EndpointsOut)
async def list_endpoints(ctx: ContextDep, operator: Operator) -> EndpointsOut:
    return EndpointsOut(endpoints=await run_in_threadpool(registry.list_endpoints, ctx.engine))


@router.post("/connectors", response_model=ConnectorOut, status_code=status.HTTP_201_CREATED)
async def register_connector(body: ConnectorIn, ctx: ContextDep, admin: DepartmentAdmin) -> ConnectorOut:
    """Register or update your department's connector under the key fingerprint you confirmed out of band."""
    record = await run_in_threadpool(
        lambda: registry.register_connector(
            ctx.engine,
            name=body.name,
            endpoint=body.endpoint,
            fingerprint=body.key_fingerprint,
            by=admin,
            gateway_key=ctx.gateway_key,
            transport=ctx.transport,
            verify=ctx.tls or True,
        )
    )
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "connector.registered",
            actor=admin.name,
            connector=record.name,
            department=record.department,
            endpoint=record.endpoint,
            key_fingerprint=record.key_fingerprint,
            version=record.version,
        )
    )
    return _out(record)


@router.get("/connectors", response_model=ConnectorsOut)
async def list_connectors(ctx: ContextDep, who: Overseer) -> ConnectorsOut:
    records = await run_in_threadpool(registry.list_connectors, ctx.engine)
    return ConnectorsOut(connectors=[_out(r) for r in records])


async def _set_enabled(ctx: ContextDep, name: str, enabled: bool, operator: Principal) -> ConnectorOut:
    record = await run_in_threadpool(registry.set_enabled, ctx.engine, name, enabled)
    action = "connector.enabled" if enabled else "connector.disabled"
    await run_in_threadpool(lambda: ctx.audit.record(action, actor=operator.name, connector=name))
    return _out(record)


@router.post("/connectors/{name}/disable", response_model=ConnectorOut)
async def disable_connector(name: str, ctx: ContextDep, operator: Operator) -> ConnectorOut:
    return await _set_enabled(ctx, name, False, operator)


@router.post("/connectors/{name}/enable", response_model=ConnectorOut)
async def enable_connector(name: str, ctx: ContextDep, operator: Operator) -> ConnectorOut:
    return await _set_enabled(ctx, name, True, operator)


@router.get("/catalog", response_model=CatalogOut)
async def get_catalog(ctx: ContextDep, who: Anyone) -> CatalogOut:
    """Datasets, measures with public bounds, dimensions with public domains and units: no counts."""
    cat = await run_in_threadpool(registry.catalog, ctx.engine)
    household = [
        f"{s.connector}.{d.name}.{dim.name}"
        for s in cat.values()
        for d in s.datasets
        if d.household_mapping
        for dim in d.dimensions
        if dim.household_level
    ]
    return CatalogOut(
        connectors=list(cat.values()), household_attributes=[*household, SIZE_BAND], notes=[PROXY_NOTE]
    )
