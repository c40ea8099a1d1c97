"""The files format end to end: whole files, tokenized, split by repository or file, with stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.dataset import TRAIN_ONLY, corpus_rows, run_build, write_corpus

from codetune.fim import FimFormat
from codetune.modeling.loading import load_tokenizer


@pytest.fixture(scope="module")
def files_build(corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("files") / "dataset"
    return out, *run_build(corpus, out, format="files", fim_rate=0.0)


def test_rows_are_whole_files_with_eos(files_build, corpus: Path) -> None:
    import pyarrow.parquet as pq

    _out, _result, dataset, stats = files_build
    contents = {
        row["path"]: row["content"] for row in pq.read_table(corpus / "data-00000.parquet").to_pylist()
    }
    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    assert set(dataset) == {"train", "valid", "test"}
    seen = 0
    for split in dataset:
        assert dataset[split].column_names == ["input_ids", "loss_mask", "text", "path", "repo"]
        for row in dataset[split]:
            assert row["text"] == contents[row["path"]]  # the whole file, never cut
            assert row["input_ids"][-1] == tokenizer.eos_token_id
            assert row["input_ids"][:-1] == tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            assert row["loss_mask"] == [1] * len(row["input_ids"])
            seen += 1
    assert seen == sum(stats["splits"][s]["examples"] for s in dataset)
    assert stats["kind"] == "causal" and stats["format"] == "files"
    assert stats["splits"]["train"]["tokens"] == sum(len(r) for r in dataset["train"]["input_ids"])


def test_split_by_repository_shares_no_file_or_repo(files_build) -> None:
    _, _, dataset, stats = files_build
    assert stats["split_by"] == "repo"
    repos = {split: set(dataset[split]["repo"]) for split in dataset}
    paths = {split: set(dataset[split]["path"]) for split in dataset}
    assert all(dataset[split].num_rows for split in ("train", "valid"))
    # The test file near-duplicates train files (the fixture's files are variants), so it may go:
    # never silently.
    assert dataset["test"].num_rows or any(w.startswith("test has no examples") for w in stats["warnings"])
    # 4 repositories of 25% each cannot make 5% and 10%: those splits are carved from files of
    # named repositories, the only ones that may appear in two splits; a file never does.
    carved = {repo for repos in stats["split_plan"]["carved_within_repositories"].values() for repo in repos}
    assert carved and set(stats["split_plan"]["carved_within_repositories"]) == {"valid", "test"}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert repos[a] & repos[b] <= carved
        assert not paths[a] & paths[b]


def test_folder_has_stats_manifest_tokenizer_and_plot(files_build) -> None:
    out, result, _, stats = files_build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"] and manifest["format"] == "files"
    assert (out / "lengths.png").stat().st_size > 1000
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert set(stats) >= {"format", "kind", "model", "max_length", "splits", "dropped", "trimmed", "fim"}
    assert result.summary["train examples"] == stats["splits"]["train"]["examples"]
    assert not list(out.parent.glob(".dataset.*"))  # no temporary folder left behind


def test_single_repository_splits_by_file(tmp_path: Path) -> None:
    rows = corpus_rows(repos=1, files_per_repo=12)
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=0.0,
        test_fraction=0.2,
        valid_fraction=0.1,
        decontam={"minhash": False},
    )
    assert stats["split_by"] == "file"
    paths = {split: dataset[split]["path"] for split in dataset}
    assert all(paths[s] for s in paths)
    assert sorted(p for s in paths for p in paths[s]) == sorted(r["path"] for r in rows)
    assert not set(paths["train"]) & set(paths["test"])


def test_overlong_files_are_trimmed_or_dropped_and_counted(tmp_path: Path) -> None:
    rows = corpus_rows()
    rows.append({**rows[0], "path": "src/short.py", "repo": "repo9", "content": "x = 1\n"})
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, trimmed, stats = run_build(corpus, tmp_path / "t", fim_rate=0.0, max_length=64, overlong="trim")
    assert stats["trimmed"] == sum(stats["splits"][s]["examples"] for s in trimmed) - 1
    assert max(len(ids) for s in trimmed for ids in trimmed[s]["input_ids"]) == 64
    _, dropped, stats = run_build(corpus, tmp_path / "d", fim_rate=0.0, max_length=64, overlong="drop")
    assert stats["dropped"]["too_long"] > 0 and stats["trimmed"] == 0
    assert [row["path"] for s in dropped for row in dropped[s]] == ["src/short.py"]


def test_overlong_files_are_split_into_blocks_that_rebuild_the_file(tmp_path: Path) -> None:
    rows = corpus_rows()
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, blocks, stats = run_build(
        corpus, tmp_path / "s", fim_rate=0.0, max_length=48, valid_fraction=0.0, test_fraction=0.0
    )
    assert stats["trimmed"] == 0 and stats["dropped"]["too_long"] == 0
    train = blocks["train"]
    assert max(len(ids) for ids in train["input_ids"]) <= 48
    by_path: dict[str, list[str]] = {}
    for row in train:
        by_path.setdefault(row["path"], []).append(row["text"])
    originals = {row["path"]: row["content"] for row in rows}
    assert any(len(pieces) > 1 for pieces in by_path.values())
    for path, pieces in by_path.items():
        assert "".join(pieces) == originals[path], path
    # Blocks end at a line end whenever one falls in the block's second half.
    inner = [piece for pieces in by_path.values() for piece in pieces[:-1]]
    assert any(piece.endswith("\n") for piece in inner)


def test_worker_processes_give_the_same_dataset(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", corpus_rows(repos=6, files_per_repo=6))
    options = {"fim_rate": 0.5, "decontam": {"minhash": False}}
    _, one, _ = run_build(corpus, tmp_path / "one", num_proc=1, **options)
    _, two, _ = run_build(corpus, tmp_path / "two", num_proc=2, **options)
    for split in one:
        assert one[split]["input_ids"] == two[split]["input_ids"]
        assert one[split]["path"] == two[split]["path"]


def indented_kotlin(index: int) -> str:
    """A Kotlin class shaped like OpenZeppelin/Kong sources: every line indented (so byte-level BPE
    merges each newline with the next line's indentation) and comments with non-ASCII characters
    that take several tokens each."""
    lines = [
        "package app.ui",
        "",
        "/** Zähler — zählt Klicks. */",
        f"class Counter{index}(private val start: Int) {{",
    ]
    for k in range(10):
        lines += [
            f"    fun step{k}(value: Int): Int {{",
            f"        // Schritt {k}: „Wert“ × 2 ☕",
            "        if (value > 0) {",
            f"            return value * {k} + start",
            "        }",
            "        return start",
            "    }",
            "",
        ]
    return "\n".join([*lines, "}"]) + "\n"


@pytest.mark.parametrize("fim_rate", [0.0, 1.0])
def test_blocks_end_at_line_ends_when_newlines_merge_with_indentation(
    tmp_path: Path, fim_rate: float
) -> None:
    rows = [
        {**row, "content": indented_kotlin(k), "path": f"src/Counter{k}.kt", "language": "kotlin"}
        for k, row in enumerate(corpus_rows(repos=1, files_per_repo=3))
    ]
    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    assert "\u010a\u0120\u0120\u0120" in tokenizer.convert_ids_to_tokens(tokenizer("\n    x")["input_ids"])
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, blocks, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=fim_rate,
        max_length=64,
        **TRAIN_ONLY,
    )
    # nothing trimmed: every block fits its row as it is tokenized alone, FIM sentinels included
    assert stats["trimmed"] == 0 and stats["dropped"].get("too_long", 0) == 0
    by_path: dict[str, list[str]] = {}
    fim = FimFormat.from_tokenizer(tokenizer)
    for row in blocks["train"]:
        assert len(row["input_ids"]) <= 64
        by_path.setdefault(row["path"], []).append(row["text"])
        if fim_rate:
            back = fim.split(
                row["input_ids"], lambda t: tokenizer.decode(t, clean_up_tokenization_spaces=False)
            )
            assert back is not None and back.text == row["text"]
    assert {path: "".join(pieces) for path, pieces in by_path.items()} == {
        r["path"]: r["content"] for r in rows
    }
    inner = [piece for pieces in by_path.values() for piece in pieces[:-1]]
    assert len(inner) > 10
    # every line is shorter than half a block, so every block but a file's last ends a line
    assert [piece[-30:] for piece in inner if not piece.endswith("\n")] == []


def test_blocks_of_a_tokenizer_that_drops_a_leading_space_lose_nothing(tmp_path: Path) -> None:
    """Code Llama's tokenizer gives " x" the tokens of "x" (sentencepiece's dummy prefix): a block
    starting with indentation would lose a space, so blocks start after it."""
    rows = [
        {**row, "content": indented_kotlin(k), "path": f"src/Counter{k}.kt", "language": "kotlin"}
        for k, row in enumerate(corpus_rows(repos=1, files_per_repo=2))
    ]
    tokenizer = load_tokenizer("tiny-codellama")
    assert (
        tokenizer(" x", add_special_tokens=False)["input_ids"]
        == tokenizer("x", add_special_tokens=False)["input_ids"]
    )
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, blocks, stats = run_build(
        corpus,
        tmp_path / "ds",
        model="tiny-codellama",
        fim_rate=0.0,
        max_length=64,
        **TRAIN_ONLY,
    )
    assert stats["trimmed"] == 0
    by_path: dict[str, list[str]] = {}
    for row in blocks["train"]:
        by_path.setdefault(row["path"], []).append(row["text"])
        # every block's tokens (BOS, text, EOS) give the block back, its first character included
        assert row["input_ids"][0] == tokenizer.bos_token_id
        assert tokenizer.decode(row["input_ids"][1:-1]) == row["text"], row["text"][:30]
    assert {path: "".join(pieces) for path, pieces in by_path.items()} == {
        r["path"]: r["content"] for r in rows
    }
    inner = [piece for pieces in by_path.values() for piece in pieces[:-1]]
    assert len(inner) > 10
    # each block still ends a line (then the next line's indentation)
    assert all(piece.rstrip(" ").endswith("\n") for piece in inner), [p[-20:] for p in inner]
