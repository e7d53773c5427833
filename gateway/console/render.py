"""Server-rendered pages: one Jinja2 environment, one way to render a page, one navigation per role.

    render(request, template, lang, session=None, status=200, **values)   an HTML response
    NAV                                  role -> [(path, message key)]: each page module adds its own
                                         entries (`nav(role, path, key)`), so the menu lists what exists

Templates see `t(key, **params)` (the catalog in the page's language, `gateway.i18n`), `lang`, `session`
(None on the sign-in page), `csrf` (the session's token for forms), `nav` (the role's entries),
`current_nav` (the entry of this page) and `path`. Autoescaping is on for every template; nothing is
marked safe but the server-rendered SVG charts, which escape their own text (`gateway.console.charts`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from gateway.auth import Role
from gateway.console.sessions import Session
from gateway.i18n import Lang, translate

__all__ = ["NAV", "environment", "nav", "render"]

NAV: dict[Role, list[tuple[str, str]]] = {role: [] for role in Role}


def nav(role: Role, path: str, key: str) -> None:
    """Add a menu entry for `role` (a path under /console and the message key of its label)."""
    if (path, key) not in NAV[role]:
        NAV[role].append((path, key))


environment = Environment(
    loader=PackageLoader("gateway.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(
    request: Request,
    template: str,
    lang: Lang,
    session: Session | None = None,
    *,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    def t(key: str, **params: object) -> str:
        return translate(key, lang, **params)

    entries = NAV[session.principal.role] if session is not None else []
    path = request.url.path
    # The menu marks the one entry the page belongs to: the longest path the page is at or under.
    under = [href for href, _ in entries if path == href or path.startswith(href.rstrip("/") + "/")]
    current = max(under, key=len) if under else None
    body = environment.get_template(template).render(
        t=t,
        lang=lang.value,
        session=session,
        csrf=session.csrf if session is not None else values.pop("csrf", ""),
        nav=entries,
        current_nav=current,
        path=path,
        **values,
    )
    return HTMLResponse(body, status_code=status)
