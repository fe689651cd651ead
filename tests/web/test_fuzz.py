"""Fuzz every API operation from the published OpenAPI document: no input may cause a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests per operation, sent with
an admin bearer token to a real running appliance. Bounded examples keep it to seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.web.support import Console

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (the dev extra)")
EXAMPLES = 20


def test_api_fuzz_no_server_errors(console: Console) -> None:
    schema = schemathesis.openapi.from_url(f"{console.url}/openapi.json")
    headers = {"Authorization": f"Bearer {console.tokens['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Revoking may hit the admin token this test sends: fuzz it last, so the rest keeps its access.
    operations.sort(key=lambda op: op.path.endswith("/revoke"))
    assert len(operations) >= 20
    failures: list[str] = []
    ran = 0
    for operation in operations:
        # Long-polling would make each example wait up to 10 s for a frame: ask for no wait.
        fixed: dict[str, Any] = {"wait": 0} if operation.path == "/api/live/{camera}.jpg" else {}
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, query=fixed or None)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call(base_url=console.url, headers=headers, timeout=20)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}"
                    )

            try:
                run()
            except Unsatisfiable:
                # No way to make an invalid request (e.g. no parameters at all): nothing to fuzz.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            ran += 1
    assert ran >= 40
    assert not failures, "\n".join(failures[:20])
    assert console.service.health()["status"] in {"ok", "degraded"}
