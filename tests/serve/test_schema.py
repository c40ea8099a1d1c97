"""/openapi.json declares every body and error, and a bounded schemathesis run over it finds no 5xx."""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POST_ERRORS = {"400", "401", "404", "408", "413", "415", "500", "503"}


@pytest.fixture(scope="module")
def server(launch):
    start, stop = launch
    # Small limits keep generation fast; fuzzed values above them must still be 4xx, never 5xx.
    running = start(max_tokens_limit=4, default_max_tokens=2, max_queue=4, body_timeout_s=5)
    yield running
    stop(running)


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    response = httpx.get(server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


ANSWER_ONCE = {"/api/show", "/v1/events", "/v1/feedback", "/admin/adapters"}


def test_every_route_declares_its_body_and_errors(openapi):
    components = openapi["components"]["schemas"]
    operations = [(path, method, op) for path, ops in openapi["paths"].items() for method, op in ops.items()]
    assert {path for path, _, _ in operations} >= {
        "/v1/completions",
        "/v1/engines/{engine}/completions",
        "/v1/chat/completions",
        "/v1/models",
        "/health",
        "/copilot_internal/v2/token",
    }
    for path, method, op in operations:
        codes = set(op["responses"])
        assert "500" in codes, path
        if method == "post":
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert op["requestBody"]["required"] is True
            for ref in [b["$ref"] for b in body.get("anyOf", [body])]:
                assert ref.rsplit("/", 1)[1] in components, ref
            assert codes >= POST_ERRORS, (path, codes)
            # Every completion POST streams (SSE; Ollama's NDJSON); Ollama's /api/show, the editor
            # events, feedback and the admin swap answer once.
            streams = {"text/event-stream", "application/x-ndjson"} & set(
                op["responses"]["200"].get("content", {})
            )
            assert streams or path in ANSWER_ONCE, path
        for code in codes - {"200", "422"}:
            error_ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert error_ref.endswith("/ErrorResponse"), (path, code)
        assert "422" not in codes  # validation errors are 400s in OpenAI's shape
    completion = components["CompletionRequest"]["properties"]
    assert {"type": "boolean"} in completion["postprocess"]["anyOf"]
    assert completion["seed"]["anyOf"][0]["maximum"] == 2**64 - 1
    chat = components["ChatCompletionRequest"]["properties"]
    assert {"type": "integer", "minimum": 0, "maximum": 20} in chat["top_logprobs"]["anyOf"]


def test_tabby_body_is_declared_on_the_openai_completions_path(openapi):
    """Tabby's plugins post `segments` to /v1/completions: the schema offers both bodies and answers."""
    from codetune.serve.protocols.tabby import TabbyCompletionRequest, TabbySegments

    components = openapi["components"]["schemas"]
    operation = openapi["paths"]["/v1/completions"]["post"]
    bodies = operation["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    names = [b["$ref"].rsplit("/", 1)[1] for b in bodies]
    assert names == ["CompletionRequest", "TabbyCompletionRequest"]
    tabby = components["TabbyCompletionRequest"]
    assert set(tabby["properties"]) == set(TabbyCompletionRequest.model_fields)
    assert tabby["additionalProperties"] is False
    assert set(components["TabbySegments"]["properties"]) == set(TabbySegments.model_fields)
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert [a["$ref"].rsplit("/", 1)[1] for a in answers] == ["CompletionResponse", "TabbyCompletionResponse"]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_fuzzed_requests_never_get_a_server_error(api_schema):
    """Each operation fuzzed with 12 cases through schemathesis's strategy API (``@given``), which,
    unlike its pytest plugin, does not reach into pytest's internals (pytest 9.2 broke the plugin)."""
    failures = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()  # a schema error fails the test here

        @settings(
            max_examples=12,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def fuzz(case):
            case.call_and_validate(checks=CHECKS, timeout=60)

        try:
            fuzz()
        except Exception as error:  # every operation is tried; the report names each that failed
            failures[operation.label] = error
    assert not failures, "\n\n".join(f"{label}: {error}" for label, error in failures.items())


def test_server_is_healthy_after_fuzzing(server):
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    body = {"prompt": "def add(a, b):\n    return", "max_tokens": 4, "temperature": 0}
    response = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["text"]
