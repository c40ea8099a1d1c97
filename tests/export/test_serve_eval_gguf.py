"""`codetune serve --model FILE.gguf` and `codetune eval --model tuned=FILE.gguf`: what the user deploys."""

from __future__ import annotations

import json

import pytest
from tests.helpers.cli import run_cli

from codetune.generation.api import CodeModel

pytest.importorskip("gguf")
pytest.importorskip("conversion")

PREFIX, SUFFIX = "def area(width, height):\n    ", "\n    return result\n"


def test_serve_a_gguf_gives_the_models_own_completions(exported):
    import openai
    from tests.helpers.server import start_server, stop_server

    source, gguf_file, _ = exported("gemma3")
    original = CodeModel(source, device="cpu")
    expected_plain = original.complete(PREFIX, max_new_tokens=12, temperature=0)
    expected_fim = original.complete(PREFIX, SUFFIX, max_new_tokens=12, temperature=0)
    server = start_server(model=str(gguf_file))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        plain = client.completions.create(model="codetune", prompt=PREFIX, max_tokens=12, temperature=0)
        fim = client.completions.create(
            model="codetune", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, temperature=0
        )
    finally:
        stop_server(server)
    assert plain.choices[0].text == expected_plain
    assert fim.choices[0].text == expected_fim


def test_eval_takes_a_gguf_as_a_named_model(exported, tmp_path):
    source, gguf_file, _ = exported("gemma3")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": PREFIX}, {"prompt": "class Stack:\n    "}]))
    proc = run_cli(
        "eval",
        "--model",
        f"base={source}",
        "--model",
        f"tuned={gguf_file}",
        "--task",
        "prompts",
        "--prompts",
        str(prompts),
        "--language",
        "python",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "report"),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
    # the same weights (f16-exact) and tokenizer: the same generations, so the same scores
    assert report["models"]["base"] == report["models"]["tuned"]
