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

from recipe_fixtures import code_json
from recipe_helpers import EXAMPLES, TINY_EVAL, TINY_TRAIN, check_run_folder, read_json, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def test_copilot_server_recipe_end_to_end(tmp_path):
    train_file = code_json(tmp_path / "data" / "train.json", count=12)
    work = tmp_path / "work"
    shared = [
        f"build.corpus={train_file}",
        "build.model=tiny-codegen",
        "build.max_length=64",
        "build.valid_fraction=0.2",
        "build.test_fraction=0.2",
        "build.num_proc=1",
        "train.model=tiny-codegen",
        *TINY_TRAIN,
        *TINY_EVAL,
    ]
    results = run("copilot-server.yaml", work, *shared)
    assert list(results) == ["build", "train", "eval"]  # serve only starts when asked for
    stats = read_json(work / "dataset" / "stats.json")
    assert stats["format"] == "code_json" and stats["max_length"] == 64
    assert sum(s["examples"] for s in stats["splits"].values()) >= 12, stats
    from datasets import load_from_disk

    train_rows = load_from_disk(str(work / "dataset"))["train"]
    assert max(len(ids) for ids in train_rows["input_ids"]) <= 64  # the block size
    check_run_folder(work / "run", method="full")
    report = read_json(work / "report" / "report.json")
    assert set(report["models"]) == {"base", "tuned"}

    port = free_port()
    command = [
        sys.executable, "-m", "codetune", "run", str(EXAMPLES / "copilot-server.yaml"), "--stages", "serve",
        "--set", f"workdir={work}", "--set", f"serve.port={port}", "--set", "serve.device=cpu",
        "--set", "serve.log_level=warning",
        *[arg for item in shared for arg in ("--set", item)],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                request(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        models = request(f"{base}/v1/models")
        assert [m["id"] for m in models["data"]] == ["codegen"], models
        # What Copilot (debug.overrideEngine=codegen) and FauxPilot send.
        answer = request(
            f"{base}/v1/engines/codegen/completions",
            {"prompt": "def hello", "max_tokens": 8, "temperature": 0.1, "n": 1, "stop": ["\n\n"]},
        )
        assert answer["object"] == "text_completion" and isinstance(answer["choices"][0]["text"], str), answer
        assert answer["usage"]["completion_tokens"] <= 8
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_copilot_server_recipe_as_written():
    from codetune.config import load_recipe

    recipe = load_recipe(EXAMPLES / "copilot-server.yaml")
    assert recipe.train.model == "Salesforce/codegen-350M-mono" and recipe.build.format == "code_json"
    assert recipe.serve.served_name == "codegen" and recipe.serve.port == 8978
