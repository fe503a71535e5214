"""Schemathesis against the in-process API: no 5xx, responses as the OpenAPI document says.

Bounded and repeatable: a few derandomized examples per operation, an admin
token, a fresh database per backend. Errors are problem+json, documented as
each operation's ``default`` response.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.schemas import APIOperation

from herald.config import Settings
from herald.node import NodeState
from herald.runtime import build_runtime
from herald.services import auth
from herald.web.app import create_app
from tests.factories import SECRET

EXAMPLES = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
# Logging in is fuzzed last: its failures slow the client address down (429).
LAST = "/auth/login"


def _fuzz(operation: APIOperation, token: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=CHECKS)

    run()


def test_it_answers_generated_requests_without_server_errors_or_schema_violations(
    database_url: str, tmp_path: Path
) -> None:
    runtime = build_runtime(
        Settings(
            database_url=database_url,
            data_dir=tmp_path,
            secret_key=SECRET,
            base_url="http://herald.test",
        )
    )
    try:
        token, _ = auth.create_token(runtime.engine, "fuzz", "admin")
        app = create_app(runtime, NodeState())
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        operations.sort(key=lambda op: op.path == LAST)
        failures = []
        for operation in operations:
            try:
                _fuzz(operation, token)
            except Exception as exc:  # collect every operation's failure, then report
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
        assert not failures, "\n\n".join(failures)
    finally:
        runtime.close()
