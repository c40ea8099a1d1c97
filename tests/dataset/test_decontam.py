"""Leakage: MinHash near-duplicates of train removed from test; benchmark text kept out of every split."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.helpers.dataset import all_rows, run_build, write_corpus

from codetune.dataset.decontam import BenchmarkFilter, near_duplicates
from codetune.textsim import text_jaccard

SHARED = "\n".join(f"def shared_helper_{i}(value):\n    return value * {i} + offset_{i}\n" for i in range(30))


def unique_file(rng: random.Random) -> str:
    words = [f"name{rng.randrange(10_000)}" for _ in range(200)]
    return "\n".join(f"{a} = {b}({c}, {d})" for a, b, c, d in zip(*[iter(words)] * 4, strict=True)) + "\n"


def rows_with_shared_file(repos: int = 10) -> list[dict]:
    rng = random.Random(1)
    rows = []
    for r in range(repos):
        for f in range(2):
            rows.append(
                {"path": f"u{f}.py", "repo": f"r{r}", "language": "python", "content": unique_file(rng)}
            )
        rows.append(
            {"path": "shared.py", "repo": f"r{r}", "language": "python", "content": SHARED + f"# copy {r}\n"}
        )
    for row in rows:
        row |= {"bytes": len(row["content"]), "lines": row["content"].count("\n"), "sha256": ""}
    return rows


def test_near_duplicates_of_train_leave_test(tmp_path: Path) -> None:
    rows = rows_with_shared_file()
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(corpus, tmp_path / "ds", fim_rate=0.0, max_length=4096, test_fraction=0.3)
    test_repos = {row["repo"] for row in rows} - set(dataset["train"]["repo"]) - set(dataset["valid"]["repo"])
    assert test_repos and stats["decontamination"]["test_near_duplicates"] == len(test_repos)
    assert stats["dropped"]["test_near_duplicate_of_train"] == len(test_repos)
    for test_text in dataset["test"]["text"]:
        assert "shared_helper_" not in test_text
        assert max(text_jaccard(test_text, t) for t in dataset["train"]["text"]) < 0.8
    assert any("shared_helper_" in t for t in dataset["train"]["text"])  # train keeps its copies


def test_near_duplicates_function() -> None:
    rng = random.Random(2)
    train = [unique_file(rng) for _ in range(20)]
    test = [train[3].replace("name", "nome", 1), unique_file(rng), train[7]]
    assert near_duplicates(train, test, threshold=0.8) == [0, 2]


def test_benchmark_files_are_kept_out(tmp_path: Path) -> None:
    rows = rows_with_shared_file(repos=6)
    leaked = rows[4]["content"].splitlines()
    snippet = "\n".join(leaked[10:14])
    (tmp_path / "bench.jsonl").write_text(json.dumps({"task_id": "x/1", "prompt": snippet}) + "\n")
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=0.0,
        max_length=4096,
        decontam={"benchmarks": [str(tmp_path / "bench.jsonl")], "minhash": False},
    )
    assert not any(snippet in row["text"] for _, row in all_rows(dataset))
    assert sum(stats["decontamination"]["benchmark"].values()) == 1
    assert stats["dropped"]["benchmark_substring"] == 1
    assert sum(dataset[s].num_rows for s in dataset) == len(rows) - 1


def test_benchmark_ngram_overlap() -> None:
    flt = BenchmarkFilter(
        ["for i in range(10): total += values[i] * weights[i]"], ngram=8, min_substring_chars=500
    )
    assert flt.reason("x = 1\nfor i in range(10): total += values[i] * weights[j]") == "ngram"
    assert flt.reason("completely different text here with no overlap at all") is None
