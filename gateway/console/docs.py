"""The API documentation, offline: Swagger UI at /docs and ReDoc at /redoc from vendored assets.

FastAPI's own pages load their scripts from a public CDN (blank on a county network without internet)
and start Swagger UI with an inline script, which the Content-Security-Policy forbids. These pages load
the copies under `static/vendor/` (see its README for versions and licences) and start Swagger UI from
`static/docs/swagger-init.js`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

__all__ = ["install"]

STATIC = "/console/static"

SWAGGER_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fedgate gateway API</title>
<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{STATIC}/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="/openapi.json"></div>
<script src="{STATIC}/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{STATIC}/docs/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fedgate gateway API</title>
<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{STATIC}/vendor/redoc/redoc.standalone.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    async def swagger(request: Request) -> HTMLResponse:
        return HTMLResponse(SWAGGER_PAGE)

    async def redoc(request: Request) -> HTMLResponse:
        return HTMLResponse(REDOC_PAGE)

    app.add_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
