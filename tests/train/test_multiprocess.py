"""`accelerate launch --config_file examples/accelerate/cpu-2proc.yaml -m codetune train ...` runs two
processes (DDP over gloo) and works unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.train import launch_two_cpu_processes

from codetune.files import read_json


@pytest.mark.slow
def test_two_cpu_processes(causal_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = ["max_steps=6", "batch_tokens=128", "eval_every=3", "save_every=3", "lr=2e-2"]
    launch_two_cpu_processes(
        ["train", "-m", "tiny-llama", "-d", str(causal_dataset), "-o", str(run), "--method", "adalora",
         *(f"--set={s}" for s in settings)]
    )  # fmt: skip
    manifest = read_json(run / "manifest.json")
    assert manifest["finished"] and manifest["summary"]["steps"] == 6
    assert manifest["summary"]["processes"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))  # one writer: no duplicated rows
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert min(evals[1:]) < evals[0]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adalora_ranks.json").is_file()
