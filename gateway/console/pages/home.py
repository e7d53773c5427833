"""The landing page after sign-in: who you are, until when, and where your role's pages are."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.console.deps import ConsoleSession, PageLang
from gateway.console.render import render

router = APIRouter()


@router.get("/")
def home(request: Request, session: ConsoleSession, lang: PageLang) -> Response:
    return render(request, "home.html", lang, session)
