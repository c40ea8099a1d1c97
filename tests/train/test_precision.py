"""Full fine-tuning of a bf16 checkpoint trains fp32 master weights (small updates are not rounded away)."""

from __future__ import annotations

from pathlib import Path

import torch

from codetune.modeling.loading import load_model, load_tokenizer
from codetune.train.config import TrainConfig
from codetune.train.recipe import train


def test_full_finetune_of_a_bf16_checkpoint_keeps_fp32_weights(causal_dataset: Path, tmp_path: Path) -> None:
    base = tmp_path / "bf16-llama"
    load_model("tiny-llama").to(torch.bfloat16).save_pretrained(base)
    load_tokenizer("tiny-llama").save_pretrained(base)
    assert load_model(str(base)).dtype == torch.bfloat16  # transformers 5 loads dtype="auto"

    # lr 1e-5: each AdamW update (~lr) is below half a bf16 step of these weights (~1e-4).
    cfg = TrainConfig(
        model=str(base),
        dataset=causal_dataset,
        method="full",
        out=tmp_path / "run",
        max_steps=3,
        batch_tokens=128,
        lr=1e-5,
        warmup_ratio=0.0,
        max_grad_norm=None,
        eval_every=100,
    )
    run = train(cfg).out
    trained = load_model(str(run))
    assert trained.dtype == torch.float32
    original = dict(load_model(str(base)).named_parameters())
    changed = total = 0
    for name, param in trained.named_parameters():
        if param.ndim == 2:
            # the build added FIM tokens to this tokenizer: compare the base model's own rows
            before = original[name].detach().float()
            after = param.detach()[: before.shape[0]]
            changed += int((after != before).sum())
            total += after.numel()
    assert changed / total > 0.5, changed / total
