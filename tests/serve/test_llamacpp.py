"""`serve --engine llamacpp`: a GGUF file served by llama.cpp through a real server on 127.0.0.1.

Every answer is llama.cpp's own greedy decoding of codetune's prompt ids (plain and FIM), whatever
the cache kept from the request before; the refusals are one `error:` line each."""

from __future__ import annotations

import time

import httpx
import pytest
from tests.helpers.export import f16_exact
from tests.helpers.server import start_server, stop_server

from codetune.fim import FimFormat
from codetune.generation.request import context_prompt_ids

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (`pip install llama-cpp-python` builds llama.cpp)"
)
pytest.importorskip("conversion")

# Each prompt shares a prefix with the one before: the engine reuses that much of llama.cpp's cache.
PROMPTS = [
    "def add(a, b):\n    return",
    "def add(a, b):\n    return a",
    "import os\n\n\ndef main():\n",
    "import os\n\n\ndef main():\n    path = os.",
    "def add(a, b):\n",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tiny-starcoder2 (a family with FIM tokens) exported to an f32 GGUF."""
    from codetune.export.config import ExportConfig
    from codetune.export.runner import export

    root = tmp_path_factory.mktemp("llamacpp")
    source = f16_exact("tiny-starcoder2", root / "model")
    return export(ExportConfig(model=str(source), out=root / "m.gguf", dtype="f32", check_prompts=0)).out


def llama_cpp_greedy(llm, ids: list[int], stops: set[int], max_tokens: int) -> list[int]:
    """llama.cpp's own greedy tokens for ``ids`` (a fresh cache), up to the first of ``stops``."""
    out: list[int] = []
    llm.reset()
    for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        if token in stops:
            break
        out.append(token)
        if len(out) == max_tokens:
            break
    return out


def test_served_gguf_answers_as_llama_cpp_decodes_codetune_prompts(exported):
    from codetune.modeling.gguf import gguf_tokenizer, read_info

    tokenizer = gguf_tokenizer(read_info(exported))
    fmt = FimFormat.from_tokenizer(tokenizer)
    stops = fmt.stop_ids | {tokenizer.eos_token_id}
    llm = llama_cpp.Llama(str(exported), n_ctx=256, n_threads=1, verbose=False)
    server = start_server(model=str(exported), engine="llamacpp", context_length=256, threads=1)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for prompt in PROMPTS:
                body = {"prompt": prompt, "max_tokens": 8, "temperature": 0}
                text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
                ids = context_prompt_ids(tokenizer, prompt, None, None)
                expected = llama_cpp_greedy(llm, ids, stops, 8)
                assert text == tokenizer.decode(expected, skip_special_tokens=True), prompt
            # FIM: the family's prompt from codetune.fim, decoded up to the family's stop tokens
            body = {
                "prompt": "def add(a, b):\n    ",
                "suffix": "\n    return c\n",
                "max_tokens": 8,
                "temperature": 0,
            }
            text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
            ids = fmt.prompt(body["prompt"], body["suffix"])
            assert text == tokenizer.decode(llama_cpp_greedy(llm, ids, stops, 8), skip_special_tokens=True)
            # log-probabilities of the chosen tokens come from llama.cpp's logits
            body = {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0, "logprobs": 1}
            choice = client.post("/v1/completions", json=body).json()["choices"][0]
            logprobs = choice["logprobs"]["token_logprobs"]
            assert len(logprobs) == len(choice["logprobs"]["tokens"]) > 0 and all(lp <= 0 for lp in logprobs)
            health = client.get("/health").json()
            assert health["reused_prompt_tokens"] > 0 and health["sequences"] == len(PROMPTS) + 2
            # seeded sampling draws the same text again; a hostile prompt is trimmed, not fatal
            body = {"prompt": PROMPTS[2], "max_tokens": 8, "temperature": 0.9, "seed": 7, "n": 2}
            first, again = (client.post("/v1/completions", json=body).json()["choices"] for _ in range(2))
            assert [c["text"] for c in first] == [c["text"] for c in again]
            body = {"prompt": "x = 1\n" * 5000, "max_tokens": 8, "temperature": 0}
            answer = client.post("/v1/completions", json=body)
            assert answer.status_code == 200 and answer.json()["usage"]["prompt_tokens"] <= 256 - 8
            answer = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 400})
            assert answer.status_code == 400 and "256" in answer.text
    finally:
        stop_server(server)


def test_refusals_are_one_error_line(cli, exported, tmp_path):
    from tests.helpers.server import make_run

    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    changed = tmp_path / "changed" / "m.gguf"  # a file whose published SHA-256 it no longer matches
    changed.parent.mkdir()
    changed.write_bytes(exported.read_bytes())
    (changed.parent / "m.gguf.sha256").write_text("0" * 64 + "  m.gguf\n")
    cases = [
        (["--model", "tiny-llama"], "needs --model to be a GGUF file"),
        (["--model", str(exported), "--adapter", str(make_run(tmp_path / "run"))], "without adapters"),
        (["--model", str(truncated)], "not a readable GGUF file"),
        (["--model", str(changed)], "the file is corrupt or was changed"),
    ]
    for options, message in cases:
        result = cli("serve", *options, "--engine", "llamacpp", "--port", "0")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert lines[-1].startswith("error:") and message in lines[-1], result.stderr


def test_a_greedy_client_does_not_starve_its_neighbour(exported):
    """llama.cpp runs one row at a time: a client that asked for 16 long rows first still lets a
    neighbour's short requests through between its rows."""
    import threading

    def client(address: str) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120)

    server = start_server(model=str(exported), engine="llamacpp", context_length=256, threads=1)
    greedy = {"prompt": ["a"] * 16, "max_tokens": 100, "min_tokens": 100, "temperature": 0}
    finished = threading.Event()

    def hog() -> None:
        with client("127.0.0.2") as http:
            assert http.post(server.url + "/v1/completions", json=greedy).status_code == 200
        finished.set()

    thread = threading.Thread(target=hog, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/health").json()["active"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with client("127.0.0.1") as http:
            for _ in range(3):
                answer = http.post(
                    server.url + "/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": 4}
                )
                assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
        assert not finished.is_set(), "the greedy request ended first: the neighbour waited behind all of it"
        assert httpx.get(server.url + "/health").json()["waiting"] > 0  # its rows wait their turn
    finally:
        thread.join(timeout=120)
        stop_server(server)
