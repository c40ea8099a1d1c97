"""Recipe options: early stopping keeps the best checkpoint, pad mode, gradient checkpointing, accumulation."""

from __future__ import annotations

import json
from pathlib import Path

from codetune.files import read_json
from codetune.train.config import TrainConfig
from codetune.train.recipe import train


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_early_stopping_keeps_the_best_checkpoint(causal_dataset: Path, tmp_path: Path) -> None:
    # A learning rate far too high: eval loss gets worse after the first steps and the run stops.
    cfg = TrainConfig(
        model="tiny-llama",
        dataset=causal_dataset,
        method="full",
        out=tmp_path / "run",
        max_steps=30,
        batch_tokens=128,
        lr=0.5,
        warmup_ratio=0.0,
        max_grad_norm=None,
        eval_every=1,
        early_stopping_patience=2,
    )
    result = train(cfg)
    evals = {r["step"]: r["eval_loss"] for r in rows(result.out) if "eval_loss" in r}
    assert result.summary["steps"] < 30
    best_step = result.summary["best_step"]
    assert evals[best_step] == min(v for k, v in evals.items() if k > 0)
    assert max(evals) == best_step + 2  # patience 2: two evals without improvement, then stop
    assert (result.out / "model" / "model.safetensors").is_file()


def test_pad_mode_gradient_checkpointing_and_accumulation(dataset_of, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny-gpt-bigcode",
        dataset=dataset_of("tiny-gpt-bigcode"),
        out=tmp_path / "run",
        packing="pad",
        batch_size=4,
        grad_accum=2,
        gradient_checkpointing=True,
        max_steps=4,
        lr=5e-3,
        weight_decay=0.01,
        eval_every=4,
    )
    result = train(cfg)
    metrics = rows(result.out)
    assert [r["step"] for r in metrics if "loss" in r] == [1, 2, 3, 4]
    tokens = [r["tokens"] for r in metrics if "tokens" in r]
    assert tokens == sorted(tokens) and tokens[-1] > 0
    assert result.summary["best_eval_loss"] < metrics[0]["eval_loss"]
    assert read_json(result.out / "manifest.json")["config"]["packing"] == "pad"
