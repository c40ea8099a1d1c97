"""An AdaLoRA adapter reloads with exactly its pruned ranks, and without peft's rank_pattern warning."""

from __future__ import annotations

import warnings
from pathlib import Path

from codetune.files import read_json
from codetune.modeling.loading import load_model
from codetune.train.config import TrainConfig
from codetune.train.recipe import train


def test_adalora_ranks_come_back_exactly(dataset_of, tmp_path: Path) -> None:
    from peft.tuners.adalora import AdaLoraLayer

    cfg = TrainConfig(
        model="tiny-gpt-bigcode",
        dataset=dataset_of("tiny-gpt-bigcode"),
        method="adalora",
        out=tmp_path / "run",
        max_steps=8,
        batch_tokens=128,
        lr=2e-2,
        warmup_ratio=0.0,
        eval_every=8,  # one eval, at the end: the adapter kept is the final one
        adalora_init_r=6,
        adalora_target_r=2,
        adalora_tinit=0.125,
        adalora_tfinal=0.25,
    )
    run = train(cfg).out
    trained = read_json(run / "adalora_ranks.json")
    assert set(trained.values()) != {6}  # pruned: equality below is not the trivial init_r everywhere

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(str(run))
    assert not [w for w in caught if "rank_pattern" in str(w.message)], [str(w.message)[:200] for w in caught]
    reloaded = {
        name.removeprefix("base_model.model."): module.r["default"]
        for name, module in model.named_modules()
        if isinstance(module, AdaLoraLayer)
    }
    assert reloaded == trained
