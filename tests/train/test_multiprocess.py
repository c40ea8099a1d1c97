"""`accelerate launch --cpu --num_processes 2 -m codetune train ...` works unchanged (DDP over gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import launch_two_cpu_processes

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
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))  # one writer: no duplicated rows
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert min(evals[1:]) < evals[0]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adalora_ranks.json").is_file()


@pytest.mark.slow
def test_the_cpu_config_file_trains_on_two_processes(causal_dataset: Path, tmp_path: Path) -> None:
    """examples/accelerate/cpu-2proc.yaml as its header runs it: one optimizer step takes both
    processes' micro-batches, more tokens than one process's batch_tokens can hold."""
    config = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "cpu-2proc.yaml"
    run = tmp_path / "run"
    launch_two_cpu_processes(
        ["train", "-m", "tiny-llama", "-d", str(causal_dataset), "-o", str(run), "--max-steps", "2",
         "--set=batch_tokens=512", "--set=eval_every=100", "--set=save_every=100"],
        config_file=config,
    )  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[0]["tokens"] > 512
