"""One base, many adapters: `model` picks a LoRA adapter (vLLM's multi-LoRA convention), rows share batches.

Two LoRA runs with different random weights over tiny-gpt-bigcode are served at once; each must answer
exactly as it does served alone (the single-run way), also while the other's request is in flight.
"""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.server import make_run

BASE = "tiny-gpt-bigcode"
PROMPT = "def add(a, b):\n    return"
PREFIX = "import math\n\n\ndef area(radius):\n    return math.pi * "
SUFFIX = "\n\n\nprint(area(2.0))\n"
TOKENS = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: make_run(tmp_path_factory.mktemp(name), seed=seed) for name, seed in (("a", 1), ("b", 2))}


def greedy(url: str, model: str, prompt: str = PROMPT, **extra) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, **extra}
    response = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def alone(runs, launch):
    """What each adapter (and the base) answers served alone, the single-run way."""
    start, stop = launch
    answers = {}
    for name, run in [("base", None), *runs.items()]:
        running = start(model=str(run) if run else BASE)
        try:
            answers[name] = {
                "plain": greedy(running.url, "codetune"),
                "fim": greedy(running.url, "codetune", PREFIX, suffix=SUFFIX),
            }
        finally:
            stop(running)
    return answers


@pytest.fixture(scope="module")
def server(runs, launch):
    start, stop = launch
    running = start(model=BASE, adapters={"a": runs["a"], "b": runs["b"]})
    yield running
    stop(running)


def test_each_adapter_answers_as_it_does_alone(server, alone):
    assert len({alone[name]["plain"] for name in ("base", "a", "b")}) == 3  # the adapters do differ
    for name in ("a", "b"):
        assert greedy(server.url, name) == alone[name]["plain"], name
    assert greedy(server.url, BASE) == alone["base"]["plain"]
    # No model at all is the base, too.
    assert greedy(server.url, None) == alone["base"]["plain"]


def test_concurrent_requests_of_different_adapters_share_a_batch(server, alone):
    """A long stream of `a` is running while `b` and the base join its batch: all three stay exact."""
    engine = server.service.engine
    before = engine.stats()
    long_body = {"model": "a", "prompt": PROMPT, "max_tokens": 60, "temperature": 0, "stream": True}
    streamed, started = [], threading.Event()

    def read_long():
        with httpx.stream("POST", server.url + "/v1/completions", json=long_body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    streamed.append(json.loads(line[6:])["choices"][0]["text"])
                    started.set()

    reader = threading.Thread(target=read_long)
    reader.start()
    assert started.wait(60)
    results = {}
    threads = [
        threading.Thread(target=lambda n=name: results.__setitem__(n, greedy(server.url, n)))
        for name in ("b", BASE)
    ]
    for thread in threads:
        thread.start()
    for thread in [*threads, reader]:
        thread.join(120)
    assert results == {"b": alone["b"]["plain"], BASE: alone["base"]["plain"]}
    assert "".join(streamed).startswith(alone["a"]["plain"])
    after = engine.stats()
    # Some decoding step ran rows of more than one request (the adapters shared a forward pass).
    assert after["decode_rows"] - before["decode_rows"] > after["decode_steps"] - before["decode_steps"]


def test_models_and_tags_list_the_adapters(server, runs):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    cards = client.models.list().data
    assert [card.id for card in cards] == [BASE, "a", "b"]
    assert cards[1].model_extra["parent"] == BASE
    tags = httpx.get(server.url + "/api/tags", timeout=30).json()["models"]
    assert [tag["name"] for tag in tags] == [BASE, "a", "b"]
    assert [tag["details"]["parent_model"] for tag in tags] == ["", BASE, BASE]
    show = httpx.post(server.url + "/api/show", json={"model": "b"}, timeout=30).json()
    assert show["details"]["parent_model"] == BASE


def test_openai_client_with_an_adapter_and_an_unknown_model(server, alone):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    result = client.completions.create(model="b", prompt=PROMPT, max_tokens=TOKENS, temperature=0)
    assert result.choices[0].text == alone["b"]["plain"] and result.model == "b"
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="c", prompt=PROMPT, max_tokens=2)
    assert caught.value.body["code"] == "model_not_found"
    assert all(name in caught.value.body["message"] for name in (BASE, "a", "b"))


# Each protocol's own way to name the model, and where its answer's text is.
PROTOCOL_CASES = {
    "mistral-fim": (
        "/v1/fim/completions",
        lambda m: {"model": m, "prompt": PREFIX, "suffix": SUFFIX, "temperature": 0, "max_tokens": TOKENS},
        lambda answer: answer["choices"][0]["message"]["content"],
        "fim",
    ),
    "ollama": (
        "/api/generate",
        lambda m: {
            "model": m,
            "prompt": PROMPT,
            "stream": False,
            "options": {"top_k": 1, "num_predict": TOKENS},
        },
        lambda answer: answer["response"],
        "plain",
    ),
    "tgi": (
        "/generate",
        lambda m: {"inputs": PROMPT, "parameters": {"adapter_id": m, "max_new_tokens": TOKENS}},
        lambda answer: answer["generated_text"],
        "plain",
    ),
    "copilot": (
        "/v1/engines/{m}/completions",
        lambda m: {"prompt": PROMPT, "temperature": 0, "max_tokens": TOKENS},
        lambda answer: answer["choices"][0]["text"],
        "plain",
    ),
}


@pytest.mark.parametrize("case", list(PROTOCOL_CASES))
def test_each_protocol_picks_the_adapter_by_its_model_field(server, alone, case):
    path, body, text_of, kind = PROTOCOL_CASES[case]

    def send(model):
        return httpx.post(server.url + path.replace("{m}", model), json=body(model), timeout=60)

    response = send("a")
    assert response.status_code == 200, response.text
    assert text_of(response.json()) == alone["a"][kind]
    unknown = send("nope")
    assert unknown.status_code == 404, unknown.text
    assert f"{BASE}, a, b" in unknown.json()["error"]["message"]


def test_adapters_over_another_base_are_refused(runs, tmp_path):
    other = make_run(tmp_path / "other", seed=3)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "model": "tiny-llama"}))
    proc = run_cli("serve", "--model", BASE, "--adapter", f"a={runs['a']}", "--adapter", f"x={other}")
    assert_clean_error(proc, "'x'", "tiny-llama", "tiny-gpt-bigcode", "share one base")


def test_adalora_and_unnamed_mixes_are_refused(runs, tmp_path):
    from peft import AdaLoraConfig, get_peft_model

    from codetune.errors import ModelLoadError
    from codetune.modeling.loading import load_model, resolve_adapters

    folder = tmp_path / "ada"
    config = AdaLoraConfig(target_modules=["c_attn"], total_step=10, init_r=4, target_r=2)
    get_peft_model(load_model(BASE), config).save_pretrained(str(folder))
    with pytest.raises(ModelLoadError, match="ADALORA: only LoRA adapters share batches"):
        resolve_adapters(BASE, {"a": runs["a"], "ada": folder})
    proc = run_cli("serve", "--model", BASE, "--adapter", str(runs["a"]), "--adapter", f"b={runs['b']}")
    assert_clean_error(proc, "NAME=RUN_DIR")


def test_micro_batching_serves_the_adapters_too(runs, alone, launch):
    """The static engine (seq2seq models, beam search, `batching: micro`) mixes adapters in generate()."""
    start, stop = launch
    running = start(model=BASE, adapters={"a": runs["a"], "b": runs["b"]}, batching="micro")
    try:
        results = {}
        threads = [
            threading.Thread(target=lambda n=name: results.__setitem__(n, greedy(running.url, n)))
            for name in ("a", "b", BASE)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results == {"a": alone["a"]["plain"], "b": alone["b"]["plain"], BASE: alone["base"]["plain"]}
    finally:
        stop(running)


def test_the_cli_serves_named_adapters(runs):
    """`codetune serve --adapter NAME=RUN_DIR` twice, as a user starts it."""
    import subprocess
    import sys
    import time

    from tests.helpers.cli import free_port

    port = free_port()
    args = [
        "--model",
        BASE,
        "--adapter",
        f"a={runs['a']}",
        "--adapter",
        f"b={runs['b']}",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen([sys.executable, "-m", "codetune", "serve", *args, "--set", "log_level=warning"])
    try:
        deadline, models = time.monotonic() + 120, None
        while models is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.2)
        assert [card["id"] for card in models["data"]] == [BASE, "a", "b"]
    finally:
        proc.terminate()
        proc.wait(30)
