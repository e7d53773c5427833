"""Routes: named key groups ("X" groups) that household queries use as `household.has_<name>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from gateway import key_groups
from gateway.api.schemas import KeyGroupIn, KeyGroupOut, KeyGroupsOut
from gateway.auth import Principal, Role
from gateway.context import ContextDep
from gateway.deps import require_roles
from gateway.errors import error_responses

router = APIRouter(prefix="/v1", tags=["key groups"], responses=error_responses(401, 403, 404, 409, 422))

Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
Registrar = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN))]
Anyone = Annotated[
    Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN, Role.AUDITOR, Role.ANALYST))
]
GroupName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,30}$", description="the group's name")]


def _out(record: key_groups.KeyGroupRecord) -> KeyGroupOut:
    return KeyGroupOut(household_attribute=record.definition.ref, **record.public_view())


@router.get("/groups", response_model=KeyGroupsOut)
async def list_groups(
    ctx: ContextDep,
    who: Anyone,
    include_retired: Annotated[bool, Query(description="also list retired groups")] = False,
) -> KeyGroupsOut:
    """The latest version of every registered key group."""
    records = await run_in_threadpool(
        lambda: key_groups.list_groups(ctx.engine, include_retired=include_retired)
    )
    return KeyGroupsOut(groups=[_out(r) for r in records])


@router.get("/groups/{name}", response_model=KeyGroupOut)
async def get_group(
    name: GroupName,
    ctx: ContextDep,
    who: Anyone,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="an older version (default: latest)")
    ] = None,
) -> KeyGroupOut:
    record = await run_in_threadpool(key_groups.get, ctx.engine, name, version)
    return _out(record)


@router.post("/groups", response_model=KeyGroupOut, status_code=status.HTTP_201_CREATED)
async def register_group(
    body: KeyGroupIn, ctx: ContextDep, who: Registrar, response: Response
) -> KeyGroupOut:
    """Register a key group, or a new version of it; an identical registration changes nothing (200).

    The definition is checked against the current catalog. A department admin registers groups over its
    own department's datasets only.
    """
    record, created = await run_in_threadpool(
        lambda: key_groups.register(
            ctx.engine,
            body.definition,
            title=body.title,
            title_zh=body.title_zh,
            description=body.description,
            by=who,
        )
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        return _out(record)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "key_group.registered",
            actor=who.name,
            key_group=record.name,
            version=record.version,
            definition=record.definition.model_dump(mode="json"),
            definition_digest=record.definition_digest,
            title=record.title,
            title_zh=record.title_zh,
            description=record.description,
        )
    )
    return _out(record)


@router.post("/groups/{name}/retire", response_model=KeyGroupOut)
async def retire_group(name: GroupName, ctx: ContextDep, operator: Operator) -> KeyGroupOut:
    """Retire a key group: it stays readable but no new query can use it (retiring again changes nothing)."""
    record, retired = await run_in_threadpool(key_groups.retire, ctx.engine, name, operator)
    if retired:
        await run_in_threadpool(
            lambda: ctx.audit.record(
                "key_group.retired", actor=operator.name, key_group=record.name, version=record.version
            )
        )
    return _out(record)
