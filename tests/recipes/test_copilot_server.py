"""examples/copilot-server.yaml: {"code": ...} JSONL -> full fine-tune -> eval -> a real server on the Copilot route."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.helpers.recipe_files import code_json
from tests.helpers.recipes import EXAMPLES, check_run_folder, check_settings, on_cpu, read_json, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def test_copilot_server_recipe_end_to_end(tmp_path, settings):
    train_file = code_json(tmp_path / "data" / "train.json", count=12)
    work = tmp_path / "work"
    shared = [f"build.corpus={train_file}", *on_cpu("copilot-server.yaml", settings)]  # tiny-codegen, full FT
    results = run("copilot-server.yaml", work, *shared)
    assert list(results) == ["build", "train", "eval"]  # serve only starts when asked for
    check_settings(results, work, "copilot-server.yaml", settings)
    stats = read_json(work / "dataset" / "stats.json")
    assert stats["format"] == "code_json" and stats["max_length"] == 1024
    assert sum(s["examples"] for s in stats["splits"].values()) >= 12, stats
    manifest = check_run_folder(work / "run", method="full")
    assert manifest["parameters"]["trainable_pct"] == 100.0, manifest["parameters"]
    report = read_json(work / "report" / "report.json")
    assert set(report["models"]) == {"base", "tuned"}
    for name in ("base", "tuned"):  # numbers, not just keys: the recipe's metrics and the test loss
        scores = report["models"][name]
        assert all(0.0 <= scores[m] <= 100.0 for m in ("edit_sim", "bleu", "exact_match")), scores
        assert scores["loss"] > 0, scores

    # The recipe's serve section as written; only the port is a free one (8978 may be taken here).
    port = free_port()
    command = [
        sys.executable, "-m", "codetune", "run", str(EXAMPLES / "copilot-server.yaml"), "--stages", "serve",
        "--set", f"workdir={work}", "--set", f"serve.port={port}",
        *[arg for item in shared for arg in ("--set", item)],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: a full pipe would block the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                request(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        models = request(f"{base}/v1/models")
        assert [m["id"] for m in models["data"]] == ["codegen"], models
        # What Copilot (debug.overrideEngine=codegen) and FauxPilot send, with a seed: at temperature 0.1
        # the trained tiny model sometimes samples "\n\n" first, which stops at an empty text.
        answer = request(
            f"{base}/v1/engines/codegen/completions",
            {"prompt": "def hello", "max_tokens": 8, "temperature": 0.1, "n": 1, "stop": ["\n\n"], "seed": 0},
        )
        assert answer["object"] == "text_completion", answer
        text = answer["choices"][0]["text"]
        assert text and "<|endoftext|>" not in text and "\n\n" not in text, answer
        assert 0 < answer["usage"]["completion_tokens"] <= 8, answer
        # No max_tokens: the recipe's default_max_tokens (16) applies.
        plain = request(f"{base}/v1/completions", {"prompt": "import os\n", "temperature": 0})
        assert 0 < plain["usage"]["completion_tokens"] <= 16, plain
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_copilot_server_recipe_as_written():
    from codetune.config import load_recipe

    recipe = load_recipe(EXAMPLES / "copilot-server.yaml")
    assert recipe.train.model == "Salesforce/codegen-350M-mono" and recipe.build.format == "code_json"
    assert recipe.serve.served_name == "codegen" and recipe.serve.port == 8978
