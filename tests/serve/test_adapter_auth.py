"""A run folder's LoRA adapter served unmerged, behind an API key, with a tiny queue limit."""

from __future__ import annotations

import httpx
import openai
import pytest
from tests.helpers.server import make_run

KEY = "sekrit-key"
PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def server(run_dir, launch):
    start_server, stop_server = launch
    running = start_server(model=str(run_dir), api_key=KEY, max_queue=2)
    yield running
    stop_server(running)


def greedy(model, tokenizer, prompt):
    from codetune.generation.api import generate
    from codetune.generation.params import SamplingParams

    return generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=6))[0]


def test_adapter_is_served_unmerged_and_changes_outputs(server, run_dir):
    from peft import PeftModel

    from codetune.modeling.loading import load_model, load_tokenizer

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    text = (
        client.completions.create(model="codetune", prompt=PROMPT, max_tokens=6, temperature=0)
        .choices[0]
        .text
    )
    served = server.service.model
    assert isinstance(served, PeftModel)
    assert any("lora_A" in name for name, _ in served.named_parameters())
    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    with_adapter = load_model("tiny-gpt-bigcode", adapter=run_dir)
    assert text == greedy(with_adapter, tokenizer, PROMPT)
    assert text != greedy(load_model("tiny-gpt-bigcode"), tokenizer, PROMPT)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_missing_or_wrong_key_is_401(server, headers):
    response = httpx.post(server.url + "/v1/completions", json={"prompt": "x"}, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models", headers=headers, timeout=30).status_code == 401
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"


def test_openai_client_without_the_key_gets_authentication_error(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        client.completions.create(model="codetune", prompt=PROMPT, max_tokens=2)


def test_full_queue_is_503_and_the_server_recovers(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": PROMPT, "max_tokens": 300, "n": 2, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=headers, timeout=60) as held:
        lines = held.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        busy = httpx.post(
            server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=headers, timeout=30
        )
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "queue_full"
        assert busy.headers["retry-after"] == "1"
    ok = None
    for _ in range(100):
        ok = httpx.post(
            server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=headers, timeout=30
        )
        if ok.status_code == 200:
            break
    assert ok is not None and ok.status_code == 200
