"""No input to any route gives a 500: schemathesis generates requests from the gateway's own
`/openapi.json`, for a key of every role, bounded in examples and time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.context import GatewayContext
from gateway.settings import GatewaySettings

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayContext]:
    state = tmp_path_factory.mktemp("fuzz") / "state"
    context = build_context(GatewaySettings(state_dir=state, metrics_enabled=False))
    yield context
    context.engine.dispose()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_no_generated_request_gets_a_server_error(ctx: GatewayContext, role: Role) -> None:
    department = "tax" if role is Role.DEPARTMENT_ADMIN else None
    _, key = create_principal(ctx.engine, role=role, name=f"fuzz-{role.value}", department=department)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ctx))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # every route is in the document
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers={"authorization": f"Bearer {key}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        call()
    assert failures == []
