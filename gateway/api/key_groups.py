"""Routes: named key groups ("X" groups) that household queries use as `household.has_<name>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status

from gateway import key_groups
from gateway.api import examples
from gateway.api.deps import Anyone, ContextDep, Operator, Registrar
from gateway.api.errors import error_responses
from gateway.api.schemas import KeyGroupIn, KeyGroupOut, KeyGroupsOut

router = APIRouter(prefix="/v1", tags=["key groups"])
GroupName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,30}$", description="the group's name")]


def _out(record: key_groups.KeyGroupRecord) -> KeyGroupOut:
    return KeyGroupOut(household_attribute=record.definition.ref, **record.public_view())


@router.get("/groups", responses=error_responses(422), response_model=KeyGroupsOut)
def list_groups(
    ctx: ContextDep,
    who: Anyone,
    include_retired: Annotated[bool, Query(description="also list retired groups")] = False,
) -> KeyGroupsOut:
    """The latest version of every registered key group."""
    records = key_groups.list_groups(ctx.engine, include_retired=include_retired)
    return KeyGroupsOut(groups=[_out(r) for r in records])


@router.get("/groups/{name}", responses=error_responses(404, 422), response_model=KeyGroupOut)
def get_group(
    name: GroupName,
    ctx: ContextDep,
    who: Anyone,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="an older version (default: latest)")
    ] = None,
) -> KeyGroupOut:
    """One key group: its latest version, or an older one with `version`."""
    return _out(key_groups.get(ctx.engine, name, version))


@router.post(
    "/groups",
    responses=error_responses(403, 409, 413, 422),
    response_model=KeyGroupOut,
    status_code=status.HTTP_201_CREATED,
)
def register_group(
    body: Annotated[KeyGroupIn, Body(openapi_examples=examples.KEY_GROUP)],
    ctx: ContextDep,
    who: Registrar,
    response: Response,
) -> KeyGroupOut:
    """Register a key group, or a new version of it; an identical registration changes nothing (200).

    The definition is checked against the current catalog. A department admin registers groups over its
    own department's datasets only.
    """
    record, created = key_groups.register(
        ctx.audit,
        body.definition,
        title=body.title,
        title_zh=body.title_zh,
        description=body.description,
        by=who,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(record)


@router.post("/groups/{name}/retire", responses=error_responses(403, 404, 422), response_model=KeyGroupOut)
def retire_group(name: GroupName, ctx: ContextDep, operator: Operator) -> KeyGroupOut:
    """Retire a key group: it stays readable but no new query can use it (retiring again changes nothing)."""
    record, _ = key_groups.retire(ctx.audit, name, operator)
    return _out(record)
