"""CUDA only: QLoRA (bitsandbytes NF4) and bf16 on the tiny llama and gpt-bigcode presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codetune.files import read_json
from codetune.train.config import MergeConfig, TrainConfig
from codetune.train.merge import merge
from codetune.train.recipe import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def run(preset: str, method: str, precision: str, dataset: Path, out: Path):
    return train(
        TrainConfig(
            model=preset,
            dataset=dataset,
            method=method,
            out=out,
            precision=precision,
            max_steps=8,
            batch_tokens=192,
            lr=5e-3,
            warmup_ratio=0.0,
            eval_every=8,
        )
    )


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt-bigcode"])
def test_qlora_trains_and_merges_dequantized(preset: str, dataset_of, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    result = run(preset, "qlora", "bf16", dataset_of(preset), tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    first_eval = read_json_line(rows[0])["eval_loss"]
    assert result.summary["best_eval_loss"] < first_eval
    with pytest.raises(Exception, match="4-bit base"):
        merge(MergeConfig(run=result.out, out=tmp_path / "merged"))
    merged = merge(MergeConfig(run=result.out, out=tmp_path / "merged", dequantize=True, atol=0.5))
    assert merged.summary["max_logit_diff"] < 0.5
    assert read_json(tmp_path / "merged" / "manifest.json")["method"] == "qlora"


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt-bigcode"])
def test_bf16_lora(preset: str, dataset_of, tmp_path: Path) -> None:
    result = run(preset, "lora", "bf16", dataset_of(preset), tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert result.summary["best_eval_loss"] < read_json_line(rows[0])["eval_loss"]


def read_json_line(line: str) -> dict:
    import json

    return json.loads(line)
