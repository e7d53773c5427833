"""Sign-in, sign-out and the language switch.

Sign-in takes an API key once and turns it into a server-side session (`gateway.console.sessions`);
the key itself is never stored or shown again. The sign-in form has its own CSRF token (a random
value in a short-lived SameSite=Strict cookie, repeated in the form), so another site cannot sign a
browser in under someone else's key.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console.deps import LANG_COOKIE, CsrfChecked, PageLang
from gateway.console.render import render
from gateway.console.sessions import COOKIE, CSRF_FIELD, sign_in, sign_out
from gateway.context import get_context
from gateway.db import utcnow
from gateway.errors import Unauthenticated
from gateway.i18n import Lang

router = APIRouter()

SIGNIN_COOKIE = "fedgate_signin"
# A pasted key is at most 128 characters (gateway.auth.MAX_KEY_LENGTH); room for stray blanks.
MAX_KEY_FIELD = 256


def _secure(request: Request) -> bool:
    return get_context(request).settings.mode == "production"


def _signin_page(request: Request, lang: Lang, *, status: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "signin.html", lang, None, status=status, csrf=token, error=error)
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=900,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("/signin")
def signin_form(request: Request, lang: PageLang) -> Response:
    return _signin_page(request, lang)


@router.post("/signin")
def signin(
    request: Request,
    lang: PageLang,
    api_key: Annotated[str, Form(max_length=MAX_KEY_FIELD)],
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=64)] = "",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _signin_page(request, lang, status=403, error="console.signin_stale")
    try:
        cookie, session = sign_in(get_context(request), api_key)
    except Unauthenticated:
        return _signin_page(request, lang, status=401, error="console.signin_refused")
    response = RedirectResponse("/console/", status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=max(1, int((session.expires_at - utcnow()).total_seconds())),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


@router.post("/signout")
def signout(request: Request, session: CsrfChecked) -> Response:
    sign_out(get_context(request), session)
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.get("/lang/{code}")
def switch_language(request: Request, code: str, next: str = "/console/") -> Response:
    """Remember the chosen language (a preference, not a change to the gateway) and go back."""
    lang = Lang.EN if code == Lang.EN.value else Lang.ZH
    # Only a path of the console itself, never another site.
    target = next if next.startswith("/console") and "//" not in next and "\\" not in next else "/console/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        LANG_COOKIE, lang.value, max_age=365 * 86400, path="/", samesite="strict", secure=_secure(request)
    )
    return response
