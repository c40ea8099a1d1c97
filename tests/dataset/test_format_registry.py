"""Every registered dataset format builds from an input of its kind, and its rows are what training
reads: causal rows end with EOS and carry a loss mask as long as their ids; seq2seq rows carry
labels ending with EOS. A format added to the registry without a row here fails the first test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers.dataset import all_rows, run_build

from codetune.dataset.formats import FORMATS
from codetune.modeling.loading import load_tokenizer


def _pairs(folder: Path) -> Path:
    path = folder / "pairs.jsonl"
    rows = [{"instruction": f"Add {i} to x", "output": f"x = x + {i}\n"} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _conala(folder: Path) -> Path:
    path = folder / "conala-train.json"
    rows = [
        {
            "intent": f"How to sort list {i}?",
            "snippet": f"sorted(values_{i})",
            "rewritten_intent": f"sort {i}",
        }
        for i in range(15)
    ]
    path.write_text(json.dumps(rows))
    return path


def _code_json(folder: Path) -> Path:
    path = folder / "train.json"
    path.write_text("\n".join(json.dumps({"code": f"def f{i}(x):\n    return x * {i}\n"}) for i in range(10)))
    return path


# format -> (input maker given a folder and the corpus fixture, model)
INPUTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "files": (lambda folder, corpus: corpus, "tiny-gpt-bigcode"),
    "windows": (lambda folder, corpus: corpus, "tiny-gpt-bigcode"),
    "units": (lambda folder, corpus: corpus, "tiny-gpt-bigcode"),
    "instruct": (lambda folder, corpus: _pairs(folder), "tiny-gpt-bigcode"),
    "seq2seq": (lambda folder, corpus: _conala(folder), "tiny-t5"),
    "code_json": (lambda folder, corpus: _code_json(folder), "tiny-gpt-bigcode"),
}


def test_every_registered_format_has_an_input_here():
    assert set(INPUTS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_builds_rows_training_reads(name: str, corpus: Path, tmp_path: Path) -> None:
    make_input, model = INPUTS[name]
    source = make_input(tmp_path, corpus)
    _, dataset, stats = run_build(
        source, tmp_path / "ds", format=name, model=model, fim_rate=0.0, decontam={"minhash": False}
    )
    eos = load_tokenizer(model).eos_token_id
    rows = [row for _, row in all_rows(dataset)]
    assert rows and stats["format"] == name
    if stats["kind"] == "seq2seq":
        assert all(row["labels"][-1] == eos and row["input_ids"] for row in rows)
    else:
        assert all(
            row["input_ids"][-1] == eos and len(row["loss_mask"]) == len(row["input_ids"]) for row in rows
        )
        assert all(any(row["loss_mask"]) for row in rows)  # every row teaches something
