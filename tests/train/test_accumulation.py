"""Gradient accumulation goes through accelerate: it knows grad_accum, syncs and steps once per N
micro-batches, and two processes give the losses of one process with the same micro-batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.helpers.train import launch_two_cpu_processes

from codetune.train.config import TrainConfig
from codetune.train.recipe import train

SETTINGS = {
    "max_steps": 4,
    "batch_tokens": 96,
    "lr": 5e-3,
    "warmup_ratio": 0.0,
    "eval_every": 2,
    "save_every": 2,
    "seed": 1,
}


def test_one_optimizer_step_per_accumulated_window(causal_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from accelerate import Accelerator

    seen: list[tuple[bool, int]] = []
    backward = Accelerator.backward

    def recording_backward(self, loss, **kwargs):
        # What DeepSpeed's engine and DDP's no_sync go by: accelerate's view of the step boundary.
        seen.append((self.sync_gradients, self.gradient_accumulation_steps))
        return backward(self, loss, **kwargs)

    monkeypatch.setattr(Accelerator, "backward", recording_backward)
    steps = []
    adam_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    cfg = TrainConfig(
        model="tiny-llama", dataset=causal_dataset, out=tmp_path / "run", grad_accum=3, **SETTINGS
    )
    result = train(cfg)
    assert result.summary["steps"] == 4
    assert seen == [(False, 3), (False, 3), (True, 3)] * 4
    assert len(steps) == 4
    optimizer = torch.load(
        tmp_path / "run" / "checkpoints" / "step-000002" / "optimizer.pt", weights_only=False
    )
    assert {int(s["step"]) for s in optimizer["state"].values()} == {2}


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_accumulating_equal_one(causal_dataset: Path, tmp_path: Path) -> None:
    """2 processes x 2 micro-batches per step take the same 4 micro-batches as 1 process x 4."""
    two = tmp_path / "two"
    overrides = [f"--set={key}={value}" for key, value in {**SETTINGS, "grad_accum": 2}.items()]
    launch_two_cpu_processes(
        ["train", "-m", "tiny-llama", "-d", str(causal_dataset), "-o", str(two), *overrides]
    )
    one = train(
        TrainConfig(
            model="tiny-llama", dataset=causal_dataset, out=tmp_path / "one", grad_accum=4, **SETTINGS
        )
    ).out
    two_rows, one_rows = rows(two), rows(one)
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows]
    for a, b in zip(two_rows, one_rows, strict=True):
        for key in ("loss", "eval_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=2e-3, abs=2e-3), (key, a, b)
    tokens = [(a["tokens"], b["tokens"]) for a, b in zip(two_rows, one_rows, strict=True) if "tokens" in b]
    assert all(a == b for a, b in tokens)  # tokens are counted over both processes
    optimizer = torch.load(two / "checkpoints" / "step-000002" / "optimizer.pt", weights_only=False)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {2}  # 2 steps, not 4 micro-batches
