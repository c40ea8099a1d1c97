"""`accelerate launch --cpu --num_processes 2 -m codetune train ...` works unchanged (DDP over gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codetune.files import read_json


@pytest.mark.slow
def test_two_cpu_processes(causal_dataset: Path, tmp_path: Path) -> None:
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # + ACCELERATE_USE_CPU: 2 CPU processes over gloo (`--cpu` starts only one)
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "codetune",
        "train",
        "-m",
        "tiny-llama",
        "-d",
        str(causal_dataset),
        "-o",
        str(run),
        "--method",
        "adalora",
        "--set",
        "max_steps=6",
        "--set",
        "batch_tokens=128",
        "--set",
        "eval_every=3",
        "--set",
        "save_every=3",
        "--set",
        "lr=2e-2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_json(run / "manifest.json")
    assert manifest["finished"] and manifest["summary"]["steps"] == 6
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))  # one writer: no duplicated rows
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert min(evals[1:]) < evals[0]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adalora_ranks.json").is_file()
