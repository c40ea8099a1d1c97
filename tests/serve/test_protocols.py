"""Every editor protocol, driven by its own client library (or its plugin's exact body) against a real server.

Each client must get the same greedy FIM text as the OpenAI route with `suffix`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import openai
import pytest

from codetune.serve.protocols import PROTOCOLS

# The cursor sits mid-line, after `return `: the FIM answer is the end of that line.
BEFORE_LINE = "import math\n\n\ndef area(radius):\n    "
LINE_START = "return math.pi * "
PREFIX = BEFORE_LINE + LINE_START
SUFFIX = "\n\n\nprint(area(2.0))\n"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def fim_answer(client):
    """The OpenAI route's greedy FIM answer: what every other protocol must give."""
    result = client.completions.create(
        model="codetune", prompt=PREFIX, suffix=SUFFIX, max_tokens=MAX_TOKENS, temperature=0
    )
    text = result.choices[0].text
    plain = client.completions.create(model="codetune", prompt=PREFIX, max_tokens=MAX_TOKENS, temperature=0)
    # The suffix changes the answer, so a protocol that dropped it would be seen.
    assert text and text != plain.choices[0].text
    return text


@pytest.fixture(scope="module")
def plain_answer(client):
    result = client.completions.create(model="codetune", prompt=PREFIX, max_tokens=MAX_TOKENS, temperature=0)
    return result.choices[0].text


def post(server, path, body, **kw):
    return httpx.post(server.url + path, json=body, timeout=60, **kw)


def test_every_protocol_is_registered():
    assert set(PROTOCOLS) == {"openai", "fim", "ollama", "llamacpp", "tgi", "tabby", "copilot"}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_answers_its_example_through_the_one_service_call(server, name):
    """A registry row's example request reaches the model through CompletionService.generate, once,
    as typed requests, and is answered."""
    from codetune.generation.request import GenerationRequest

    service = server.service
    calls = []
    generate = service.generate

    async def counted(requests, **options):
        calls.append(list(requests))
        return await generate(requests, **options)

    service.generate = counted
    try:
        path, body = PROTOCOLS[name].example
        response = post(server, path, body)
    finally:
        del service.generate
    assert response.status_code == 200, response.text
    assert len(calls) == 1, calls
    [requests] = calls
    assert requests and all(isinstance(r, GenerationRequest) for r in requests)
    assert "def add(a, b):" in requests[0].prompt


def test_openai_sdk_streams_the_same_fim_text(client, fim_answer):
    chunks = client.completions.create(
        model="codetune", prompt=PREFIX, suffix=SUFFIX, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks) == fim_answer


# -- Mistral / Codestral FIM ------------------------------------------------------------------------
def test_mistralai_fim_complete_and_stream(server, fim_answer):
    try:
        from mistralai import Mistral
    except ImportError:  # mistralai >= 2 moved the client
        from mistralai.client import Mistral

    mistral = Mistral(api_key="unused", server_url=server.url)
    result = mistral.fim.complete(
        model="codestral-latest", prompt=PREFIX, suffix=SUFFIX, max_tokens=MAX_TOKENS, temperature=0
    )
    assert result.choices[0].message.content == fim_answer
    assert result.usage.completion_tokens > 0
    streamed = "".join(
        event.data.choices[0].delta.content or ""
        for event in mistral.fim.stream(
            model="codestral-latest", prompt=PREFIX, suffix=SUFFIX, max_tokens=MAX_TOKENS, temperature=0
        )
    )
    assert streamed == fim_answer


# -- Ollama -----------------------------------------------------------------------------------------
def test_ollama_generate_with_suffix_stream_and_list(server, fim_answer):
    import ollama

    client = ollama.Client(host=server.url)
    options = {"temperature": 0, "num_predict": MAX_TOKENS}
    result = client.generate(model="codetune", prompt=PREFIX, suffix=SUFFIX, options=options)
    assert result.response == fim_answer
    assert result.done and result.eval_count > 0 and result.prompt_eval_count > 0
    parts = list(
        client.generate(model="codetune", prompt=PREFIX, suffix=SUFFIX, options=options, stream=True)
    )
    assert "".join(p.response for p in parts) == fim_answer
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert [m.model for m in client.list().models] == ["tiny-gpt-bigcode"]
    assert "insert" in client.show("tiny-gpt-bigcode").capabilities
    assert httpx.get(server.url + "/api/version", timeout=10).json()["version"]


def test_ollama_rejects_an_unknown_option(server):
    response = post(
        server, "/api/generate", {"model": "codetune", "prompt": "x", "options": {"n_predict": 3}}
    )
    assert response.status_code == 400
    assert "options.n_predict" in response.text


# -- TGI (huggingface_hub, llm-ls) ------------------------------------------------------------------
def test_huggingface_hub_text_generation_and_stream(server, plain_answer, hub_client_online):
    from huggingface_hub import InferenceClient

    for route in ("/generate", ""):
        hub = InferenceClient(model=server.url + route)
        assert hub.text_generation(PREFIX, max_new_tokens=MAX_TOKENS) == plain_answer
    hub = InferenceClient(model=server.url + "/generate_stream")
    assert "".join(hub.text_generation(PREFIX, max_new_tokens=MAX_TOKENS, stream=True)) == plain_answer
    details = InferenceClient(model=server.url + "/generate").text_generation(
        PREFIX, max_new_tokens=MAX_TOKENS, details=True
    )
    assert details.generated_text == plain_answer
    assert details.details.generated_tokens > 0


def test_llm_ls_sends_the_fim_prompt_rendered_with_sentinels(server, client):
    """llm-vscode / llm.nvim render `<fim_prefix>...<fim_suffix>...<fim_middle>` into `inputs`."""
    from codetune.fim import FimFormat

    tokenizer = server.service.tokenizer
    rendered = tokenizer.decode(FimFormat.from_tokenizer(tokenizer).prompt(PREFIX, SUFFIX))
    assert "<fim_suffix>" in rendered
    body = {
        "inputs": rendered,
        "parameters": {"max_new_tokens": MAX_TOKENS, "return_full_text": False},
    }
    response = post(server, "/generate", body)
    raw = client.completions.create(
        model="codetune",
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"postprocess": False},
    )
    assert response.json()["generated_text"] == raw.choices[0].text


# -- llama.cpp (llama.vim / llama.vscode) -----------------------------------------------------------
def llama_vim_body(**override):
    """/infill as ggml-org/llama.vim's autoload/llama.vim builds it: the lines before the cursor's line,
    the cursor line's start as `prompt`, and the rest as `input_suffix`."""
    body = {
        "id_slot": 0,
        "input_prefix": BEFORE_LINE,
        "input_suffix": SUFFIX,
        "input_extra": [{"text": "import os\n", "time": 1733000000.0, "filename": "util.py"}],
        "prompt": LINE_START,
        "n_predict": MAX_TOKENS,
        "stop": [],
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": False,
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": [
            "content",
            "timings/prompt_n",
            "timings/prompt_ms",
            "timings/prompt_per_token_ms",
            "timings/prompt_per_second",
            "timings/predicted_n",
            "timings/predicted_ms",
            "timings/predicted_per_token_ms",
            "timings/predicted_per_second",
            "truncated",
            "tokens_cached",
        ],
    }
    body.update(override)
    return body


def test_llama_vim_infill_field_for_field(server, fim_answer):
    # top_k 1 makes llama.vim's sampler chain greedy, so the answer can be compared; input_extra would
    # put context in the prompt (tests/serve/test_repo_context.py), so this body sends none.
    body = llama_vim_body(top_k=1, t_max_prompt_ms=60_000, t_max_predict_ms=60_000, input_extra=[])
    response = post(server, "/infill", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["content"] == fim_answer
    assert set(data) == {
        "content",
        "prompt_n",
        "prompt_ms",
        "prompt_per_token_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_token_ms",
        "predicted_per_second",
        "truncated",
        "tokens_cached",
    }
    # The plugin's own sampling values are accepted too.
    assert post(server, "/infill", llama_vim_body()).status_code == 200


def test_llama_vim_ring_buffer_warmup_generates_nothing(server):
    """llama.vim sends its extra context with n_predict 0 and 1 ms budgets to warm the cache."""
    body = {
        "input_prefix": "",
        "input_suffix": "",
        "input_extra": [{"text": "x = 1\n", "time": 1.0, "filename": "a.py"}],
        "prompt": "",
        "n_predict": 0,
        "temperature": 0.0,
        "stream": False,
        "samplers": ["temperature"],
        "cache_prompt": True,
        "t_max_prompt_ms": 1,
        "t_max_predict_ms": 1,
    }
    response = post(server, "/infill", body)
    assert response.status_code == 200, response.text
    assert response.json()["content"] == ""


def test_llamacpp_completion_streams_and_health(server, plain_answer):
    body = {"prompt": PREFIX, "n_predict": MAX_TOKENS, "top_k": 1, "stream": True}
    with httpx.stream("POST", server.url + "/completion", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(e["content"] for e in events) == plain_answer
    assert events[-1]["stop"] is True and not any(e["stop"] for e in events[:-1])
    assert events[-1]["tokens_predicted"] > 0
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_n_indent_stops_at_a_dedented_line():
    from codetune.serve.protocols.llamacpp import cut_below_indent

    assert cut_below_indent("a\n    b\nc\n    d", 4) == "a\n    b\n"
    assert cut_below_indent("a\n\n    b", 4) == "a\n\n    b"
    assert cut_below_indent("a\nb", 0) == "a\nb"


# -- Tabby ------------------------------------------------------------------------------------------
def tabby_body(**override):
    """/v1/completions as tabby-agent sends it (clients/tabby-agent: CompletionRequest -> segments)."""
    body = {
        "language": "python",
        "segments": {
            "prefix": PREFIX,
            "suffix": SUFFIX,
            "filepath": "src/geometry.py",
            "git_url": "https://github.com/example/geometry.git",
            "declarations": [{"filepath": "src/util.py", "body": "def square(x):\n    return x * x\n"}],
            "relevant_snippets_from_changed_files": [
                {"filepath": "src/other.py", "body": "PI = 3.14\n", "score": 0.5}
            ],
            "relevant_snippets_from_recently_opened_files": [],
            "clipboard": "",
        },
        "user": "vscode-1",
    }
    body.update(override)
    return body


def test_tabby_completion_shares_the_openai_path_by_shape(server, fim_answer, client):
    body = tabby_body()
    # the editor's declarations and snippets would be context (tests/serve/test_repo_context.py)
    for name in ("declarations", "relevant_snippets_from_changed_files"):
        body["segments"][name] = []
    response = post(server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"id", "choices"}
    # Tabby cannot ask for a length: both get the server's default.
    same = client.completions.create(model="codetune", prompt=PREFIX, suffix=SUFFIX, temperature=0)
    assert data["choices"] == [{"index": 0, "text": same.choices[0].text}]
    assert same.choices[0].text.startswith(fim_answer)
    # An OpenAI body on the same path still gets OpenAI's answer.
    openai_body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": MAX_TOKENS, "temperature": 0}
    assert post(server, "/v1/completions", openai_body).json()["object"] == "text_completion"


def test_tabby_is_validated_strictly_and_has_health_and_settings(server):
    bad = tabby_body()
    bad["segments"]["cursor"] = 3
    response = post(server, "/v1/completions", bad)
    assert response.status_code == 400 and "segments.cursor" in response.text
    health = httpx.get(server.url + "/v1/health", timeout=10).json()
    assert health["model"] == "tiny-gpt-bigcode" and health["device"] == "cpu"
    assert "git_describe" in health["version"]
    setting = httpx.get(server.url + "/v1beta/server_setting", timeout=10).json()
    assert setting == {"disable_client_side_telemetry": True}


# -- Copilot / FauxPilot ----------------------------------------------------------------------------
def test_copilot_body_with_extra_and_nwo(server, fim_answer):
    body = {
        "prompt": PREFIX,
        "suffix": SUFFIX,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "stop": ["\n\n"],
        "stream": True,
        "nwo": "example/geometry",
        "extra": {
            "language": "python",
            "next_indent": 0,
            "trim_by_indentation": True,
            "prompt_tokens": 20,
            "suffix_tokens": 8,
        },
    }
    with httpx.stream(
        "POST", server.url + "/v1/engines/copilot-codex/completions", json=body, timeout=60
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == fim_answer
    assert chunks[0]["model"] == "copilot-codex"


# -- Continue (node) --------------------------------------------------------------------------------
NODE_PACKAGE = "@continuedev/openai-adapters@1.37.0"


@pytest.fixture(scope="module")
def continue_adapters():
    """The npm package, installed once into a cache folder; skipped without node/npm or the registry."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed for Continue's client")
    cache = Path(os.environ.get("CODETUNE_NODE_CACHE", Path.home() / ".cache" / "codetune-tests" / "node"))
    if not (cache / "node_modules" / "@continuedev" / "openai-adapters").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"name": "codetune-test-clients", "private": true}\n')
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", NODE_PACKAGE],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install {NODE_PACKAGE}: {done.stderr[-300:]}")
    script = cache / "continue_adapters.mjs"
    shutil.copy(Path(__file__).parent / "clients" / "continue_adapters.mjs", script)
    return script


def test_continue_fim_stream_and_completion_stream(server, fim_answer, continue_adapters):
    done = subprocess.run(
        ["node", str(continue_adapters), server.url, PREFIX, SUFFIX, str(MAX_TOKENS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers == {"fim": fim_answer, "completion": fim_answer}


# -- keystrokes -------------------------------------------------------------------------------------
def test_a_newer_request_from_the_same_slot_cancels_the_older(server):
    """llama.vim reuses its slot on every keystroke: the older generation stops when a newer one comes."""
    long_body = {"prompt": PREFIX, "n_predict": 400, "top_k": 1, "stream": True, "id_slot": 3}
    events, started = [], threading.Event()

    def read_long():
        with httpx.stream("POST", server.url + "/completion", json=long_body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    started.set()

    reader = threading.Thread(target=read_long)
    reader.start()
    assert started.wait(60)
    newer = post(server, "/completion", {"prompt": PREFIX, "n_predict": 2, "top_k": 1, "id_slot": 3})
    reader.join(120)
    assert newer.status_code == 200 and newer.json()["tokens_predicted"] == 2
    assert events[-1]["stop"] is True
    assert events[-1]["tokens_predicted"] < 400


def test_openapi_declares_each_protocol_route_with_its_stream_type(server):
    paths = httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    streams = {
        "/v1/fim/completions": "text/event-stream",
        "/api/generate": "application/x-ndjson",
        "/infill": "text/event-stream",
        "/completion": "text/event-stream",
        "/generate": "text/event-stream",
        "/generate_stream": "text/event-stream",
        "/v1/engines/{engine}/completions": "text/event-stream",
    }
    for path, media_type in streams.items():
        responses = paths[path]["post"]["responses"]
        assert media_type in responses["200"]["content"], path
        assert {"400", "401", "413", "500", "503"} <= set(responses), path
    for path in ("/api/tags", "/api/version", "/v1/health", "/v1beta/server_setting"):
        assert "get" in paths[path], path


def test_openapi_bodies_are_each_protocols_own_model(server):
    """Every body is declared under its own name: a clash would hide one model behind another."""
    from codetune.serve.protocols import copilot, fim, llamacpp, ollama, tgi

    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    components = schema["components"]["schemas"]
    bodies = {
        "/v1/fim/completions": fim.FimRequest,
        "/api/generate": ollama.OllamaGenerateRequest,
        "/api/show": ollama.OllamaShowRequest,
        "/infill": llamacpp.LlamaInfillRequest,
        "/completion": llamacpp.LlamaCompletionRequest,
        "/generate": tgi.TgiGenerateRequest,
        "/": tgi.TgiGenerateRequest,
        "/v1/engines/{engine}/completions": copilot.CopilotCompletionRequest,
    }
    for path, model in bodies.items():
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert set(components[ref.rsplit("/", 1)[1]]["properties"]) == set(model.model_fields), path
    assert "postprocess" in components["CompletionRequest"]["properties"]


def test_llamacpp_prompt_budget_stops_generation(server):
    """t_max_prompt_ms: once the prompt took longer than that, llama.cpp generates nothing more."""
    body = {"prompt": PREFIX, "n_predict": 50, "top_k": 1, "t_max_prompt_ms": 0.001}
    budgeted = post(server, "/completion", body).json()
    assert budgeted["tokens_predicted"] <= 2
    unbounded = post(server, "/completion", {**body, "t_max_prompt_ms": 0}).json()
    assert unbounded["tokens_predicted"] > 2


def test_a_file_longer_than_the_context_is_trimmed_and_says_so(server):
    """Editors send whole files: llama.vim's body with a prefix of 3x the context still gets an answer."""
    long_prefix = "value = compute(value)\n" * (3 * server.service.context // 4)
    body = llama_vim_body(input_prefix=long_prefix, top_k=1, response_fields=None)
    response = post(server, "/infill", body)
    assert response.status_code == 200, response.text
    assert response.json()["truncated"] is True
    assert post(server, "/infill", llama_vim_body(top_k=1, response_fields=None)).json()["truncated"] is False
