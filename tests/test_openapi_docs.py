"""The OpenAPI document is worth reading: every route, schema and property is described, every request body
has an example, and every route lists the error statuses it can return with the one error body.

The rules are read off each route, so a route added later (jobs, console, schedules) is held to them too;
each failure names the route or the schema and field, and what to add:

- a route: a summary and a docstring (its description);
- every property of every schema: `Field(description=...)`; every schema: a class docstring;
- a request body: `Body(openapi_examples=...)` (gateway/api/examples.py);
- error responses (`responses=error_responses(...)`, gateway/api/errors.py): 401 unless the route is public,
  429 unless public, 503 always (flood gate, fail-closed audit), 413 and 422 with a body, 422 with
  parameters, 404 with a path parameter; each with the `ErrorResponse` body and a description of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.api.deps import routes_without_auth
from gateway.app import build_context, create_app
from gateway.settings import GatewaySettings

METHODS = ("get", "post", "put", "patch", "delete")
ERROR_SCHEMA = "#/components/schemas/ErrorResponse"
FASTAPI_DEFAULT_DESCRIPTION = "Additional Response"


@pytest.fixture(scope="module")
def app_and_doc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    settings = GatewaySettings(state_dir=tmp_path_factory.mktemp("openapi") / "state")
    context = build_context(settings)
    app = create_app(context)
    yield app, app.openapi()
    context.engine.dispose()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _public(app: Any) -> set[tuple[str, str]]:
    out = set()
    for entry in routes_without_auth(app):
        method, path = entry.split(" ", 1)
        out.add((method.lower(), path))
    return out


def test_every_route_is_described(app_and_doc: tuple[Any, dict[str, Any]]) -> None:
    _, doc = app_and_doc
    missing = [
        f"{method.upper()} {path}: add a docstring to the route function (its description)"
        for path, method, op in _operations(doc)
        if not (op.get("description") or "").strip() or not (op.get("summary") or "").strip()
    ]
    assert not missing, "\n".join(missing)


def test_every_schema_and_property_is_described(app_and_doc: tuple[Any, dict[str, Any]]) -> None:
    _, doc = app_and_doc
    missing = []
    for name, schema in doc["components"]["schemas"].items():
        if name in ("HTTPValidationError", "ValidationError"):
            missing.append(f"schema {name}: a route lacks 422 in error_responses(...) (FastAPI's default)")
            continue
        if not (schema.get("description") or "").strip():
            missing.append(f"schema {name}: add a class docstring")
        for prop, spec in schema.get("properties", {}).items():
            if not (spec.get("description") or "").strip():
                missing.append(f"schema {name}, property {prop}: add Field(description=...)")
    assert not missing, "\n".join(missing)


def _has_example(body: dict[str, Any]) -> bool:
    return any("example" in media or "examples" in media for media in body.get("content", {}).values())


def test_every_request_body_has_an_example(app_and_doc: tuple[Any, dict[str, Any]]) -> None:
    _, doc = app_and_doc
    bodies = [(path, method, op) for path, method, op in _operations(doc) if "requestBody" in op]
    assert len(bodies) >= 10  # the walk reaches the API's bodies
    missing = [
        f"{method.upper()} {path}: add Body(openapi_examples=...) to its body (gateway/api/examples.py)"
        for path, method, op in bodies
        if not _has_example(op["requestBody"])
    ]
    assert not missing, "\n".join(missing)


def _expected_errors(path: str, method: str, op: dict[str, Any], public: set[tuple[str, str]]) -> set[str]:
    # The audit log fails closed for every request; the flood gate and the key check skip public routes.
    expected = {"503"} if (method, path) in public else {"401", "429", "503"}
    parameters = op.get("parameters", [])
    if "requestBody" in op:
        expected |= {"413", "422"}
    if parameters:
        expected.add("422")
    if any(p["in"] == "path" for p in parameters):
        expected.add("404")
    return expected


def test_every_route_lists_its_error_responses_with_the_one_error_body(
    app_and_doc: tuple[Any, dict[str, Any]],
) -> None:
    app, doc = app_and_doc
    public = _public(app)
    problems = []
    for path, method, op in _operations(doc):
        where = f"{method.upper()} {path}"
        responses = op.get("responses", {})
        errors = {status: r for status, r in responses.items() if status[0] in "45"}
        for status in sorted(_expected_errors(path, method, op, public) - set(errors)):
            problems.append(f"{where}: add {status} to responses=error_responses(...)")
        for status, response in sorted(errors.items()):
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") != ERROR_SCHEMA:
                problems.append(f"{where}: {status} must use the ErrorResponse body (error_responses(...))")
            description = (response.get("description") or "").strip()
            if not description or description == FASTAPI_DEFAULT_DESCRIPTION:
                problems.append(f"{where}: {status} needs its meaning (errors.ERROR_MEANINGS)")
    assert not problems, "\n".join(problems)


def test_errors_are_listed_per_route_not_per_router(app_and_doc: tuple[Any, dict[str, Any]]) -> None:
    """Routes of one router differ in what they can return: a list shared by a router would show a 413
    on a route without a body, or a 404 on every route of a router that has one lookup."""
    _, doc = app_and_doc
    overclaimed = [
        f"{method.upper()} {path}: lists 413 but takes no body"
        for path, method, op in _operations(doc)
        if "413" in op.get("responses", {}) and "requestBody" not in op
    ]
    assert not overclaimed, "\n".join(overclaimed)
    lists = {frozenset(s for s in op.get("responses", {}) if s[0] in "45") for _, _, op in _operations(doc)}
    assert len(lists) >= 8  # the routes' lists differ as the routes do


def test_the_one_error_body_is_referenced_and_pinned(app_and_doc: tuple[Any, dict[str, Any]]) -> None:
    _, doc = app_and_doc
    body = doc["components"]["schemas"]["ErrorResponse"]
    assert body["properties"]["error"]["$ref"] == "#/components/schemas/ErrorBody"
    fields = set(doc["components"]["schemas"]["ErrorBody"]["properties"])
    assert fields == {"code", "message", "field", "request_id"}
