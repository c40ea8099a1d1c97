"""The OpenAI-compatible server, driven by the real `openai` client against a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def direct(server, prompt, max_new_tokens=6, **kw):
    """Greedy text straight from the engine, for comparison with what the server answers."""
    from codetune.generation.api import generate_completions
    from codetune.generation.params import SamplingParams

    serving = server.service
    params = SamplingParams(max_new_tokens=max_new_tokens, **kw)
    [(_, [completion])] = list(generate_completions(serving.model, serving.tokenizer, [prompt], params))
    return completion


def healthy(server):
    response = httpx.get(server.url + "/health", timeout=10)
    return response.status_code == 200 and response.json()["status"] == "ok"


def test_completion_matches_engine_and_counts_usage(server, client):
    result = client.completions.create(model="codetune", prompt=PROMPT, max_tokens=6, temperature=0)
    expected = direct(server, PROMPT)
    choice = result.choices[0]
    assert choice.text == expected.text and choice.text
    assert choice.finish_reason == "length"
    assert result.object == "text_completion"
    assert result.usage.prompt_tokens == expected.prompt_tokens
    assert result.usage.completion_tokens == 6
    assert result.usage.total_tokens == expected.prompt_tokens + 6


def test_models_health_and_copilot_token(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-gpt-bigcode"]
    assert healthy(server)
    token = httpx.get(server.url + "/copilot_internal/v2/token", timeout=10).json()
    assert token["token"] and token["expires_at"] > time.time()


def test_engines_route_as_copilot_and_fauxpilot_call_it(server):
    body = {
        "prompt": PROMPT,
        "max_tokens": 4,
        "temperature": 0,
        "extra": {"language": "python"},
        "nwo": "a/b",
    }
    response = httpx.post(server.url + "/v1/engines/codegen/completions", json=body, timeout=60)
    assert response.status_code == 200
    data = response.json()
    assert data["model"] == "codegen"
    assert data["choices"][0]["text"] == direct(server, PROMPT, 4).text


def test_fim_through_suffix_uses_the_family_prompt(server, client):
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    result = client.completions.create(
        model="codetune",
        prompt=prefix,
        suffix=suffix,
        max_tokens=6,
        temperature=0,
        extra_body={"postprocess": False},
    )
    # StarCoder's PSM layout, spelled out: <fim_prefix> PREFIX <fim_suffix> SUFFIX <fim_middle>
    tokenizer = server.service.tokenizer
    sentinel = tokenizer.convert_tokens_to_ids

    def text(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    ids = [
        sentinel("<fim_prefix>"),
        *text(prefix),
        sentinel("<fim_suffix>"),
        *text(suffix),
        sentinel("<fim_middle>"),
    ]
    assert result.choices[0].text == direct(server, ids).text
    assert result.usage.prompt_tokens == len(ids)
    # Post-processing is on by default for FIM: a single-line request never spans lines.
    processed = client.completions.create(
        model="codetune", prompt=prefix, suffix=suffix, max_tokens=8, temperature=0
    )
    assert "\n" not in processed.choices[0].text


def test_streaming_yields_the_same_text_and_ends_with_done(server, client):
    chunks = list(
        client.completions.create(model="codetune", prompt=PROMPT, max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == direct(server, PROMPT).text
    assert chunks[-1].choices[0].finish_reason == "length"
    with httpx.stream(
        "POST",
        server.url + "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 3, "stream": True},
        timeout=60,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_n_choices_sampled_with_a_seed(server, client):
    first = client.completions.create(
        model="codetune", prompt=PROMPT, max_tokens=5, n=3, temperature=1.0, seed=7
    )
    again = client.completions.create(
        model="codetune", prompt=PROMPT, max_tokens=5, n=3, temperature=1.0, seed=7
    )
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) > 1
    # A sampled row may draw EOS early; one that ran to the limit has all 5 tokens.
    full = sum(5 for c in first.choices if c.finish_reason == "length")
    assert full <= first.usage.completion_tokens == again.usage.completion_tokens <= 15


def test_stop_sequence_cuts_and_reports_stop(server, client):
    full = direct(server, PROMPT, 8).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    result = client.completions.create(
        model="codetune", prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop]
    )
    assert result.choices[0].text == full[: full.find(stop)]
    assert result.choices[0].finish_reason == "stop"


def test_echo_logprobs_and_penalties(server, client):
    result = client.completions.create(
        model="codetune",
        prompt=PROMPT,
        max_tokens=3,
        temperature=0,
        echo=True,
        logprobs=2,
        presence_penalty=1.5,
        frequency_penalty=0.5,
    )
    choice = result.choices[0]
    assert choice.text.startswith(PROMPT)
    assert len(choice.logprobs.token_logprobs) == 3 and all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    # The penalties are honoured: the greedy text repeats tokens, the penalised one does not.
    repetitive = "def foo(x):\n    return"
    plain = direct(server, repetitive, 6).token_ids
    penalised = direct(server, repetitive, 6, frequency_penalty=2.0, presence_penalty=2.0).token_ids
    assert len(set(plain)) < 6 and len(set(penalised)) == 6


def test_chat_completion_and_stream(server, client):
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Add two numbers."},
    ]
    result = client.chat.completions.create(model="codetune", messages=messages, max_tokens=5, temperature=0)
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    text = result.choices[0].message.content
    assert text and result.usage.completion_tokens <= 5
    chunks = list(
        client.chat.completions.create(
            model="codetune", messages=messages, max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text


def test_sixteen_concurrent_clients_share_batches(server, client):
    before = server.service.engine.stats()
    prompts = [f"def f{i}(x):\n    return x" + " + 1" * (i % 4) for i in range(16)]

    def call(prompt):
        return client.completions.create(model="codetune", prompt=prompt, max_tokens=4, temperature=0)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, prompts))
    assert all(r.choices[0].text for r in results)
    assert [r.choices[0].text for r in results] == [direct(server, p, 4).text for p in prompts]
    after = server.service.engine.stats()
    assert after["sequences"] - before["sequences"] >= 16
    # Forward passes were shared: on average at least two rows per pass (alone: one pass per token).
    tokens = after["tokens"] - before["tokens"]
    assert after["batches"] - before["batches"] <= tokens / 2


BAD_BODIES = [
    ("malformed json", b'{"prompt": "x", ', 400),
    ("not an object", b'["x"]', 400),
    ("wrong type", json.dumps({"prompt": 12, "max_tokens": 4}).encode(), 400),
    ("max_tokens not an int", json.dumps({"prompt": "x", "max_tokens": "many"}).encode(), 400),
    ("negative max_tokens", json.dumps({"prompt": "x", "max_tokens": -3}).encode(), 400),
    ("huge max_tokens", json.dumps({"prompt": "x", "max_tokens": 10**9}).encode(), 400),
    ("temperature out of range", json.dumps({"prompt": "x", "temperature": -1}).encode(), 400),
    ("logit_bias unsupported", json.dumps({"prompt": "x", "logit_bias": {"1": 5}}).encode(), 400),
    ("max_tokens fill the context", json.dumps({"prompt": "x", "max_tokens": 1500}).encode(), 400),
    ("body over the limit", json.dumps({"prompt": "y" * 1_100_000}).encode(), 413),
    ("chat without messages", json.dumps({"messages": []}).encode(), 400),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_requests_get_openai_errors_and_server_stays_up(server, case, body, status):
    path = "/v1/chat/completions" if "chat" in case else "/v1/completions"
    response = httpx.post(
        server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert healthy(server)


def test_max_tokens_filling_the_context_through_the_client(server, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="codetune", prompt="x = 1\n", max_tokens=1500)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_client_disconnect_mid_stream_frees_its_slot(server):
    before = server.service.engine.stats()
    body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        assert server.service.engine.active == 1
    # Leaving the block closes the connection mid-stream.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = server.service.engine.stats()
        if stats["active"] == 0 and stats["sequences"] > before["sequences"]:
            break
        time.sleep(0.05)
    after = server.service.engine.stats()
    assert after["active"] == 0
    assert after["cancelled"] == before["cancelled"] + 1
    # The generation itself stopped early instead of running to 400 tokens.
    assert after["sequences"] == before["sequences"] + 1
    assert after["tokens"] - before["tokens"] < 400
    assert healthy(server)
    result = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=60)
    assert result.status_code == 200


# -- cancellation -----------------------------------------------------------------------------------
LONG = {"prompt": PROMPT, "max_tokens": 400, "min_tokens": 400, "temperature": 0}


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_newer_request_of_the_same_user_cancels_the_older(server, stream):
    """Editors send one completion per keystroke with the same `user`: only the newest is worth finishing."""
    engine = server.service.engine
    before = engine.stats()
    older = {**LONG, "stream": stream, "user": "alice"}
    result = {}

    def send_older():
        if stream:
            with httpx.stream("POST", server.url + "/v1/completions", json=older, timeout=120) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            result["choice"] = json.loads(lines[-2][6:])["choices"][0]
            result["last"] = lines[-1]
        else:
            result["choice"] = httpx.post(server.url + "/v1/completions", json=older, timeout=120).json()[
                "choices"
            ][0]

    thread = threading.Thread(target=send_older)
    thread.start()
    wait_until(lambda: engine.active == 1 and engine.stats()["decode_steps"] > before["decode_steps"])
    # Another user's request leaves alice's running.
    other = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "user": "bob"})
    assert other.status_code == 200 and engine.active == 1
    newer = httpx.post(
        server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "user": "alice"}, timeout=60
    )
    thread.join(60)
    assert newer.status_code == 200 and newer.json()["choices"][0]["finish_reason"] == "length"
    assert result["choice"]["finish_reason"] == "cancelled"
    if stream:
        assert result["last"] == "data: [DONE]"
    wait_until(lambda: engine.active == 0)
    after = engine.stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens"] - before["tokens"] < 400


@pytest.mark.parametrize(
    ("path", "stream"),
    [("/v1/completions", False), ("/v1/chat/completions", False), ("/v1/chat/completions", True)],
    ids=["completions", "chat", "chat-stream"],
)
def test_a_client_that_goes_away_cancels_its_rows(server, path, stream):
    """The connection closes mid-generation (an editor dropped the request): its rows leave the engine."""
    import socket

    engine = server.service.engine
    before = engine.stats()
    request = {**LONG, "stream": stream}
    if path.endswith("chat/completions"):
        request["messages"] = [{"role": "user", "content": request.pop("prompt")}]
    body = json.dumps(request).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    wait_until(lambda: engine.active == 1 and engine.stats()["decode_steps"] > before["decode_steps"])
    sock.close()
    wait_until(lambda: engine.active == 0)
    after = engine.stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens"] - before["tokens"] < 400
    assert healthy(server)
