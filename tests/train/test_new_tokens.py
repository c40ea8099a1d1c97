"""Tokens the build added (FIM sentinels a tokenizer lacked) get trained embedding and LM-head rows,
saved with the adapter and carried into the merged model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.helpers.train import stdlib_chunks

from codetune.modeling.loading import load_model, load_tokenizer
from codetune.train.config import MergeConfig, TrainConfig
from codetune.train.merge import merge
from codetune.train.recipe import train

NEW = ["<|new_fim_prefix|>", "<|new_fim_suffix|>", "<|new_fim_middle|>"]


def dataset_with_new_tokens(folder: Path, preset: str) -> tuple[Path, list[int]]:
    """A causal dataset whose tokenizer gained three special tokens, each used in every example."""
    from datasets import Dataset, DatasetDict

    tokenizer = load_tokenizer(preset)
    chunks = stdlib_chunks(tokenizer, 40, 40)
    tokenizer.add_special_tokens({"additional_special_tokens": NEW})
    new_ids = tokenizer.convert_tokens_to_ids(NEW)
    rows = []
    for chunk in chunks:
        third = len(chunk) // 3
        rows.append(
            [
                new_ids[0],
                *chunk[:third],
                new_ids[1],
                *chunk[third : 2 * third],
                new_ids[2],
                *chunk[2 * third :],
            ]
        )
    split = lambda part: Dataset.from_dict({"input_ids": part, "loss_mask": [[1] * len(r) for r in part]})  # noqa: E731
    DatasetDict({"train": split(rows[:32]), "valid": split(rows[32:])}).save_to_disk(str(folder))
    (folder / "stats.json").write_text(json.dumps({"format": "fim", "kind": "causal", "model": preset}))
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder, new_ids


def rows_of(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding rows and the LM-head rows (as the model computes them) of ``ids``."""
    index = torch.tensor(ids)
    with torch.no_grad():
        embedded = model.get_input_embeddings()(index)
        head = model.get_output_embeddings()
        hidden = torch.eye(embedded.shape[-1])[:4]
        logits = head(hidden)[:, index]
    return embedded.float(), logits.float()


# gpt-bigcode ties the head to the embedding, llama does not, phi's head has a bias.
@pytest.mark.parametrize("preset", ["tiny-gpt-bigcode", "tiny-llama", "tiny-phi"])
def test_new_token_rows_train_reload_and_merge(preset: str, tmp_path: Path) -> None:
    from accelerate.utils import set_seed

    dataset, new_ids = dataset_with_new_tokens(tmp_path / "data", preset)
    cfg = TrainConfig(
        model=preset,
        dataset=dataset,
        out=tmp_path / "run",
        max_steps=4,
        batch_tokens=128,
        lr=5e-2,
        warmup_ratio=0.0,
        eval_every=4,
        seed=5,
    )
    run = train(cfg).out

    # The rows the run started from: the same seed, load and resize as the recipe.
    set_seed(5)
    start = load_model(preset)
    start.resize_token_embeddings(len(load_tokenizer(str(dataset / "tokenizer"))))
    start_embedded, start_logits = rows_of(start, new_ids)

    first, second = load_model(str(run)), load_model(str(run))
    embedded, logits = rows_of(first, new_ids)
    assert (embedded - start_embedded).abs().max() > 1e-3  # trained, not left at their start
    assert (logits - start_logits).abs().max() > 1e-3
    again = rows_of(second, new_ids)
    torch.testing.assert_close(again[0], embedded)  # saved with the adapter, not re-drawn at load
    torch.testing.assert_close(again[1], logits)

    merge(MergeConfig(run=run, out=tmp_path / "merged"))
    merged = load_model(str(tmp_path / "merged"))
    merged_embedded, merged_logits = rows_of(merged, new_ids)
    torch.testing.assert_close(merged_embedded, embedded, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged_logits, logits, atol=1e-5, rtol=1e-4)
