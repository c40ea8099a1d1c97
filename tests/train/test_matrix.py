"""The matrix: six tiny presets x {lora, adalora, full}: loss goes down, AdaLoRA ranks move, the result reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.helpers.train import ALL_PRESETS

from codetune.files import read_json
from codetune.modeling.loading import load_model
from codetune.train.config import TrainConfig
from codetune.train.methods import all_methods
from codetune.train.packing import Batches
from codetune.train.recipe import forward_loss, train

STEPS = 8


def valid_loss(model, dataset: Path, seq2seq: bool) -> float:
    """Loss per target token on the valid split, as the recipe computes it."""
    from datasets import load_from_disk

    columns = ["input_ids", "labels"] if seq2seq else ["input_ids", "loss_mask"]
    rows = load_from_disk(str(dataset))["valid"].select_columns(columns).to_list()
    batches = Batches(
        rows,
        kind="seq2seq" if seq2seq else "causal",
        mode="packed",
        batch_tokens=192,
        batch_size=8,
        pad_id=0,
        seed=0,
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for indices in batches.plan(0):
            loss, n = forward_loss(model, batches.collate(indices), seq2seq)
            total, count = total + float(loss), count + n
    return total / count


# Every registered method that trains on plain next-token rows, but those that need a quantized base on
# CUDA (QLoRA: tests/train/test_gpu.py). The preference methods train on feedback rows:
# tests/train/test_preference.py runs each of them.
CPU_METHODS = [
    name
    for name, method in all_methods().items()
    if not getattr(method, "quantized", False) and method.objective == "sft"
]


@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_train_matrix(preset: str, method: str, dataset_of, seq2seq_dataset: Path, tmp_path: Path) -> None:
    seq2seq = preset == "tiny-t5"
    dataset = seq2seq_dataset if seq2seq else dataset_of(preset)
    cfg = TrainConfig(
        model=preset,
        dataset=dataset,
        method=method,
        out=tmp_path / "run",
        max_steps=STEPS,
        batch_tokens=192,
        batch_size=4,
        lr={"full": 1e-3, "adalora": 2e-2}.get(method, 5e-3),
        warmup_ratio=0.0,
        eval_every=STEPS,
        adalora_init_r=6,
        adalora_target_r=2,
        adalora_tinit=0.125,
        adalora_tfinal=0.25,
        lora_r=8,
    )
    result = train(cfg)
    run = result.out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == STEPS and result.summary["steps"] == STEPS
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert rows[0] == {"step": 0, "eval_loss": evals[0]}  # the untrained model, measured first
    assert result.summary["best_eval_loss"] < evals[0] - 0.01, evals
    assert (run / "loss.png").is_file() and read_json(run / "manifest.json")["finished"]
    assert (run / "tokenizer" / "tokenizer.json").is_file()

    if method == "adalora":
        ranks = read_json(run / "adalora_ranks.json")
        assert ranks and set(ranks.values()) != {6}, ranks  # pruned from init_r by importance
        assert result.summary["adalora_rank_mean"] < 6

    # The saved result (best by eval loss) reloads through the run folder and scores what the run logged.
    assert (run / ("model" if method == "full" else "adapter")).is_dir()
    reloaded = load_model(str(run))
    assert valid_loss(reloaded, dataset, seq2seq) == pytest.approx(result.summary["best_eval_loss"], abs=2e-3)
