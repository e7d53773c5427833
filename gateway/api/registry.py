"""Routes: the operator's endpoint allow-list, connector registration, and the analysts' catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from aggregation.query import SIZE_BAND
from gateway import registry
from gateway.api import examples
from gateway.api.deps import Anyone, ContextDep, DepartmentAdmin, Operator, Overseer
from gateway.api.errors import error_responses
from gateway.api.schemas import CatalogOut, ConnectorIn, ConnectorOut, ConnectorsOut, EndpointIn, EndpointsOut

router = APIRouter(prefix="/v1", tags=["registry"])

PROXY_NOTE = (
    "Disposable income is a documented proxy built from what departments hold (wages, business income, "
    "pensions, transfers, minus personal contributions); no department holds property income."
)


def _out(record: registry.ConnectorRecord) -> ConnectorOut:
    return ConnectorOut(**record.public_view())


@router.post(
    "/endpoints",
    responses=error_responses(403, 413, 422),
    response_model=EndpointsOut,
    status_code=status.HTTP_201_CREATED,
)
def allow_endpoint(
    body: Annotated[EndpointIn, Body(openapi_examples=examples.ENDPOINT)], ctx: ContextDep, operator: Operator
) -> EndpointsOut:
    """Put a connector endpoint on the allow-list (the gateway fetches no other URL)."""
    registry.allow_endpoint(ctx.audit, body.url, operator, production=ctx.settings.mode == "production")
    return EndpointsOut(endpoints=registry.list_endpoints(ctx.engine))


@router.delete("/endpoints", responses=error_responses(403, 404, 422), response_model=EndpointsOut)
def remove_endpoint(
    ctx: ContextDep, operator: Operator, url: Annotated[str, Query(max_length=512)]
) -> EndpointsOut:
    """Take an endpoint off the allow-list (404 if it is not on it)."""
    registry.remove_endpoint(ctx.audit, url, operator)
    return EndpointsOut(endpoints=registry.list_endpoints(ctx.engine))


@router.get("/endpoints", responses=error_responses(403), response_model=EndpointsOut)
def list_endpoints(ctx: ContextDep, operator: Operator) -> EndpointsOut:
    """The operator's allow-list of connector endpoints: the only URLs the gateway fetches."""
    return EndpointsOut(endpoints=registry.list_endpoints(ctx.engine))


@router.post(
    "/connectors",
    responses=error_responses(403, 409, 413, 422, 502),
    response_model=ConnectorOut,
    status_code=status.HTTP_201_CREATED,
)
def register_connector(
    body: Annotated[ConnectorIn, Body(openapi_examples=examples.CONNECTOR)],
    ctx: ContextDep,
    admin: DepartmentAdmin,
) -> ConnectorOut:
    """Register or update your department's connector under the key fingerprint you confirmed out of band."""
    record = registry.register_connector(
        ctx.audit,
        name=body.name,
        endpoint=body.endpoint,
        fingerprint=body.key_fingerprint,
        by=admin,
        gateway_key=ctx.gateway_key,
        transport=ctx.transport,
        verify=ctx.tls or True,
        production=ctx.settings.mode == "production",
    )
    return _out(record)


@router.get("/connectors", responses=error_responses(403), response_model=ConnectorsOut)
def list_connectors(ctx: ContextDep, who: Overseer) -> ConnectorsOut:
    """Every registered connector with its department, endpoint, key fingerprint and whether it is enabled."""
    return ConnectorsOut(connectors=[_out(r) for r in registry.list_connectors(ctx.engine)])


@router.post(
    "/connectors/{name}/disable", responses=error_responses(403, 404, 422), response_model=ConnectorOut
)
def disable_connector(name: str, ctx: ContextDep, operator: Operator) -> ConnectorOut:
    """Disable a connector (operator): its datasets leave the catalog and no query reaches it; audited."""
    return _out(registry.set_enabled(ctx.audit, name, False, operator))


@router.post(
    "/connectors/{name}/enable", responses=error_responses(403, 404, 422), response_model=ConnectorOut
)
def enable_connector(name: str, ctx: ContextDep, operator: Operator) -> ConnectorOut:
    """Enable a disabled connector again (operator); audited."""
    return _out(registry.set_enabled(ctx.audit, name, True, operator))


@router.get("/catalog", responses=error_responses(), response_model=CatalogOut)
def get_catalog(ctx: ContextDep, who: Anyone) -> CatalogOut:
    """Datasets, measures with public bounds, dimensions with public domains and units: no counts."""
    cat = registry.catalog(ctx.engine)
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
