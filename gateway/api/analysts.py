"""Routes: the analysts' own public keys, registered and revoked by the operator (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status

from gateway import analyst_keys
from gateway.api import examples
from gateway.api.deps import ContextDep, CurrentPrincipal, Operator
from gateway.api.errors import error_responses
from gateway.api.schemas import AnalystKeyIn, AnalystKeyOut, AnalystKeysOut
from gateway.auth import Role

router = APIRouter(prefix="/v1", tags=["analysts"])

Fingerprint = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
AnalystName = Annotated[str, Path(max_length=100)]


@router.post(
    "/analysts/{analyst}/keys",
    response_model=AnalystKeyOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(403, 404, 409, 413, 422),
)
def register_key(
    analyst: AnalystName,
    body: Annotated[AnalystKeyIn, Body(openapi_examples=examples.ANALYST_KEY)],
    ctx: ContextDep,
    operator: Operator,
) -> AnalystKeyOut:
    """Pin an analyst's own public key (the private key stays on the analyst's machine)."""
    return AnalystKeyOut(**analyst_keys.register_key(ctx.audit, analyst, body.public_key, operator))


@router.get("/analysts/keys", response_model=AnalystKeysOut, responses=error_responses())
def list_keys(ctx: ContextDep, who: CurrentPrincipal) -> AnalystKeysOut:
    """Every registered key (an analyst sees only their own): departments name them in rules."""
    if who.role is Role.ANALYST:
        return AnalystKeysOut(keys=[AnalystKeyOut(**k) for k in analyst_keys.list_keys(ctx.engine, who.name)])
    return AnalystKeysOut(keys=[AnalystKeyOut(**k) for k in analyst_keys.list_keys(ctx.engine)])


@router.delete(
    "/analysts/keys/{fingerprint}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404, 409, 422),
)
def revoke_key(fingerprint: Fingerprint, ctx: ContextDep, operator: Operator) -> Response:
    """Revoke an analyst key: it signs no new query (connectors still see old signatures verify)."""
    analyst_keys.revoke_key(ctx.audit, fingerprint, operator)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
