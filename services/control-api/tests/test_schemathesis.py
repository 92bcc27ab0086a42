"""Property-based fuzzing of the control-api's own OpenAPI: no input ever gets a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests for every operation
the app publishes at ``/schema/openapi.json`` and sends them in-process to the Litestar app,
which runs its real lifespan against a real Postgres database. Every request carries the token
of the role that owns its route (a worker's for worker routes, the publisher's for the outbox,
an admin's for the rest), so the handlers are fuzzed too, not only the authentication. Bounded and reproducible: a fixed
number of examples per operation and mode, derandomized (the seed is the operation).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from cryptography.fernet import Fernet
from hypothesis import HealthCheck
from noetl_control_api import create_app
from noetl_dev._procs import create_database
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

#: Examples per operation and generation mode: ~45 operations x 2 modes x this = requests.
EXAMPLES = 20
#: A long-poll the fuzzer would otherwise ask to wait for up to two minutes.
MAX_WAIT_MS = 100


def _bounded(case: Any) -> Any:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait_ms"), int) and body["wait_ms"] > MAX_WAIT_MS:
        body["wait_ms"] = MAX_WAIT_MS
    return case


def test_no_generated_request_gets_a_5xx(postgres_admin_url: str, make_settings: Any, auth: Any) -> None:
    database_url = create_database(postgres_admin_url, f"t_{uuid.uuid4().hex[:12]}")
    app = create_app(
        make_settings(database_url, server_url="http://testserver", credentials_key=Fernet.generate_key().decode())
    )
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    operations = 0
    timings: dict[str, float] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the app's OpenAPI has an invalid operation: {result}"
        operation = result.ok()
        operations += 1
        op_started = time.monotonic()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode).map(_bounded))
            def run(case: Any) -> None:
                owner = auth.route_owner(case.method.upper(), case.formatted_path)
                response = case.call(headers=auth.bearer(owner), timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path} body={case.body!r:.300}"
                        f" -> {response.status_code} {response.text[:300]}"
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # a mode with nothing to generate (e.g. negative cases of a no-input GET)
        timings[f"{operation.method.upper()} {operation.path}"] = time.monotonic() - op_started
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    print(
        f"schemathesis: {operations} operations, {total} requests in {elapsed:.1f}s,"
        f" statuses {dict(sorted(statuses.items()))}, 5xx {len(server_errors)}"
    )
    slowest = sorted(timings.items(), key=lambda item: -item[1])[:5]
    print("slowest operations:", ", ".join(f"{name} {seconds:.1f}s" for name, seconds in slowest))
    assert operations >= 40, "the app published fewer operations than it has"
    assert total >= operations * EXAMPLES, "too few requests were generated to mean anything"
    assert not server_errors, "\n".join(server_errors[:20])


@pytest.fixture(autouse=True, scope="module")
def _stop_lifespans() -> Any:
    """Schemathesis keeps each app's lifespan running for the process; close the pools here."""
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()
