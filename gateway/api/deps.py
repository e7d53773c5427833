"""FastAPI dependencies and their aliases: the one way routes get what they need.

    ContextDep        the process's `GatewayContext` (settings, engine, ledger, audit trail)
    SettingsDep, EngineDep
    CurrentPrincipal  the authenticated caller (any role)
    Operator, DepartmentAdmin, Analyst, Auditor    the caller, in that role
    Overseer (operator, department admin, auditor), Registrar (operator, department admin), Anyone

Routes declare what they need with these aliases; `require_roles(...)` builds a role alias. Deny by
default: a route without a principal dependency is public, and `routes_without_auth(app)` lists those
so a test can pin the short list of public routes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

import sqlalchemy as sa
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gateway.auth import INVALID_KEY, Principal, Role, authenticate
from gateway.context import GatewayContext as GatewayContext
from gateway.context import get_context
from gateway.db import make_engine
from gateway.errors import Forbidden, Unauthenticated
from gateway.settings import GatewaySettings, get_settings

__all__ = [
    "Analyst",
    "Anyone",
    "Auditor",
    "ContextDep",
    "CurrentPrincipal",
    "DepartmentAdmin",
    "EngineDep",
    "Operator",
    "Overseer",
    "Registrar",
    "SettingsDep",
    "current_principal",
    "get_engine",
    "require_roles",
    "routes_without_auth",
]

SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]

# auto_error=False: a missing or malformed header is answered by us, in the one error shape, with 401.
_bearer = HTTPBearer(auto_error=False, description="an API key from `fedgate users create`")


@functools.lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    return make_engine(url)


def get_engine(request: Request, settings: SettingsDep) -> sa.Engine:
    """The engine the app was started with (`app.state.engine`), else one built from the settings.

    The app's start-up is expected to build the engine, run `gateway.db.migrate` and put it on
    `app.state.engine`; tests may set `app.state.engine` or override this dependency.
    """
    state = request.app.state
    # The app may also carry the engine inside its shared context object (`app.state.context.engine`).
    for engine in (getattr(state, "engine", None), getattr(getattr(state, "context", None), "engine", None)):
        if isinstance(engine, sa.Engine):
            return engine
    return _engine_for(settings.database_url_resolved())


EngineDep = Annotated[sa.Engine, Depends(get_engine)]


async def current_principal(
    request: Request,
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller named by `Authorization: Bearer <key>`; 401 without a valid, unexpired, unrevoked key."""
    if credentials is None:
        raise Unauthenticated(INVALID_KEY)
    # The gateway's audit middleware has already authenticated this very request's key: reuse it.
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        principal = cached
    else:
        # The lookup blocks on the database; the binding below must happen here, in the request's own
        # context, so that log lines of the route and of the middleware after it carry the principal.
        principal = await run_in_threadpool(authenticate, engine, credentials.credentials)
    structlog.contextvars.bind_contextvars(principal=principal.name, role=principal.role.value)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that returns the caller if their role is one of `roles`, else refuses with 403.

    Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
    """
    if not roles:
        # An empty list would allow nobody and read like "anyone"; refuse to build it.
        raise ValueError("require_roles() needs at least one role")
    allowed = frozenset(Role(r) for r in roles)
    names = " or ".join(sorted(r.value for r in allowed))

    async def check_role(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"this action needs the role {names}")
        return principal

    check_role.__name__ = f"require_{'_or_'.join(sorted(r.value for r in allowed))}"
    return check_role


ContextDep = Annotated[GatewayContext, Depends(get_context)]
Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
DepartmentAdmin = Annotated[Principal, Depends(require_roles(Role.DEPARTMENT_ADMIN))]
Analyst = Annotated[Principal, Depends(require_roles(Role.ANALYST))]
Auditor = Annotated[Principal, Depends(require_roles(Role.AUDITOR))]
Overseer = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN, Role.AUDITOR))]
Registrar = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.DEPARTMENT_ADMIN))]
Anyone = Annotated[Principal, Depends(require_roles(*Role))]


def _calls(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], Dependant]]:
    """(path template, methods, dependant) of every API route, routers included with their prefixes."""
    try:
        # Newer FastAPI keeps included routers as branches; their routes carry the include prefix and
        # the include-level dependencies only in their route contexts.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI flattens included routes into app.routes
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path_format, route.methods or set(), route.dependant
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            dependant = getattr(context, "dependant", None) or context.original_route.dependant
            yield (
                context.path_format or context.original_route.path_format,
                context.methods or set(),
                dependant,
            )


def routes_without_auth(app: FastAPI) -> list[str]:
    """'METHOD /path' of every API route that does not depend on `current_principal`.

    A meta-test asserts this equals the intended public routes (`GET /healthz`), so a new route that
    forgets its role check fails the suite instead of being open.
    """
    public: list[str] = []
    for path, methods, dependant in _api_routes(app):
        if not any(call is current_principal for call in _calls(dependant)):
            public.extend(f"{method} {path}" for method in sorted(methods))
    return sorted(public)
