"""The console's dependencies: who is signed in, in which role, in which language, and the CSRF check.

    ConsoleSession                         the signed-in session (else a redirect to the sign-in page)
    AnalystSession, OperatorSession, DepartmentAdminSession, AuditorSession   the session, in that role
    require_console_roles(*roles)          builds such an alias; another role gets 403
    CsrfChecked                            a state-changing request carries the session's CSRF token
                                           (form field `csrf_token` or header `x-csrf-token`)
    PageLang                               zh-CN or en: the `fedgate_lang` cookie, else Accept-Language

Pages declare what they need with these aliases, like the API's routes do with `gateway.api.deps`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Role
from gateway.console.sessions import CSRF_FIELD, CSRF_HEADER, Session, check_csrf
from gateway.errors import Forbidden
from gateway.i18n import Lang, negotiate

__all__ = [
    "LANG_COOKIE",
    "AnalystSession",
    "AnySession",
    "AuditorSession",
    "ConsoleSession",
    "CsrfChecked",
    "DepartmentAdminSession",
    "OperatorSession",
    "PageLang",
    "SignInRequired",
    "page_lang",
    "require_console_roles",
    "require_role",
]

LANG_COOKIE = "fedgate_lang"


class SignInRequired(Exception):
    """No live session: the console answers with a redirect to its sign-in page."""


def page_lang(request: Request) -> Lang:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in (Lang.ZH.value, Lang.EN.value):
        return Lang(chosen)
    return negotiate(request.headers.get("accept-language"))


PageLang = Annotated[Lang, Depends(page_lang)]


def console_session(request: Request) -> Session:
    """The session the audit middleware resolved from the cookie for this very request."""
    session = getattr(request.state, "console_session", None)
    if not isinstance(session, Session):
        raise SignInRequired
    return session


ConsoleSession = Annotated[Session, Depends(console_session)]


def require_role(session: Session, *roles: Role) -> None:
    """`Forbidden` unless the session's principal has one of `roles` (the one home of the console's role
    check, for pages and for the state-changing routes that take `CsrfChecked`)."""
    if session.principal.role not in roles:
        names = " or ".join(sorted(r.value for r in roles))
        raise Forbidden(f"this page needs the role {names}")


def require_console_roles(*roles: Role) -> Callable[[Session], Awaitable[Session]]:
    if not roles:
        raise ValueError("require_console_roles() needs at least one role")

    async def check(session: ConsoleSession) -> Session:
        require_role(session, *roles)
        return session

    return check


AnalystSession = Annotated[Session, Depends(require_console_roles(Role.ANALYST))]
OperatorSession = Annotated[Session, Depends(require_console_roles(Role.OPERATOR))]
DepartmentAdminSession = Annotated[Session, Depends(require_console_roles(Role.DEPARTMENT_ADMIN))]
AuditorSession = Annotated[Session, Depends(require_console_roles(Role.AUDITOR))]
AnySession = ConsoleSession


async def csrf_checked(request: Request, session: ConsoleSession) -> Session:
    """Refuse a state-changing request without this session's CSRF token (403, nothing done)."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    check_csrf(session.csrf, given)
    return session


CsrfChecked = Annotated[Session, Depends(csrf_checked)]
