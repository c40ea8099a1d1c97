"""Every registered dataset format, built the same way: what it declares (kind, prompted, repository
context, reserved room) is what its dataset holds. A format added to the registry without a row in
INPUTS fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.dataset import all_rows, corpus_rows, run_build, write_corpus
from tests.helpers.feedback import typed_on, write

from codetune.dataset.config import BuildConfig
from codetune.dataset.formats import FORMATS, format_class
from codetune.errors import ConfigError
from codetune.modeling.loading import load_tokenizer

# What each format reads: a corpus folder, or JSONL records (and the model its kind needs).
INPUTS = {
    "files": ("corpus", "tiny-gpt-bigcode"),
    "windows": ("corpus", "tiny-gpt-bigcode"),
    "units": ("corpus", "tiny-gpt-bigcode"),
    "instruct": ("instruct.jsonl", "tiny-gpt-bigcode"),
    "seq2seq": ("seq2seq.jsonl", "tiny-t5"),
    "code_json": ("code.jsonl", "tiny-gpt-bigcode"),
    "feedback": ("records", "tiny-gpt-bigcode"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    rows = corpus_rows(repos=3, files_per_repo=3)
    records = {
        "instruct.jsonl": [
            {"instruction": f"add {i}", "output": f"def add{i}(x):\n    return x + {i}\n"} for i in range(9)
        ],
        "seq2seq.jsonl": [
            {"intent": f"sort list {i}", "snippet": f"sorted(l{i})", "rewritten_intent": f"sort l{i}"}
            for i in range(9)
        ],
        "code.jsonl": [{"code": row["content"], "language": row["language"]} for row in rows],
    }
    out = {
        "corpus": write_corpus(folder / "corpus", rows),
        "records": write(folder / "records", typed_on(12, 3)),
    }
    for name, items in records.items():
        out[name] = folder / name
        out[name].write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return out


def test_every_registered_format_has_a_row() -> None:
    assert set(INPUTS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_builds_what_it_declares(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    source, model = INPUTS[name]
    cls = format_class(name)
    options = {"fim_rate": 0.5} if cls.kind == "causal" else {}
    _, dataset, stats = run_build(
        inputs[source],
        tmp_path / "ds",
        format=name,
        model=model,
        max_length=96,
        decontam={"minhash": False},
        **options,
    )
    fmt = cls(BuildConfig(format=name))
    assert stats["format"] == name and stats["kind"] == cls.kind
    assert sum(len(dataset[s]) for s in dataset) > 0
    for split in dataset.values():
        assert split.column_names == list(fmt.features())
        for row in split:
            assert len(row["input_ids"]) <= 96
    columns = set(dataset["train"].column_names)
    assert ("labels" in columns) == (cls.kind == "seq2seq")
    assert ("loss_mask" in columns) == (cls.kind == "causal")
    assert ("prompt" in columns) == fmt.prompted
    if cls.kind == "causal" and not fmt.prompted:
        assert stats["fim"]["examples"] > 0  # text rows become FIM examples
    if "fim" in cls.reserves:
        # blocks leave room for the sentinels: nothing is trimmed to fit them
        assert stats["trimmed"] == 0


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_builds_rows_training_reads(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    """Causal rows end with EOS and carry a loss mask as long as their ids, with something to learn;
    seq2seq rows carry labels ending with EOS."""
    source, model = INPUTS[name]
    _, dataset, stats = run_build(
        inputs[source], tmp_path / "ds", format=name, model=model, fim_rate=0.0, decontam={"minhash": False}
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
        assert all(any(row["loss_mask"]) for row in rows)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_repository_context_is_taken_only_where_declared(
    name: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    source, model = INPUTS[name]
    cls = format_class(name)
    options = {"format": name, "model": model, "repo_context": True, "max_length": 256, "fim_rate": 0.0}
    if not cls.repo_context:
        with pytest.raises(ConfigError, match="repo_context needs rows that are files"):
            run_build(inputs[source], tmp_path / "ds", **options)
        assert not (tmp_path / "ds").exists()
        return
    _, _, stats = run_build(inputs[source], tmp_path / "ds", decontam={"minhash": False}, **options)
    context = stats["repo_context"]
    assert context["enabled"] and context["examples_with_context"] > 0
    if cls.reserves and "context" in cls.reserves:
        assert context["block_reserve_tokens"] == min(256, 256 // 2)
