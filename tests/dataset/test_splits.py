"""Splits come close to the asked fractions, are never empty without a warning, and stats.json says
which repository went where."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from tests.helpers.dataset import corpus_row, corpus_rows, run_build, write_corpus

from codetune.dataset.splits import plan_splits, resolve_split_by
from codetune.errors import InputError


def skewed_rows(sizes: tuple[int, ...]) -> list[dict]:
    """Repositories of very different sizes (files of about equal length), like a real Kotlin set."""
    rows = []
    for repo, count in enumerate(sizes):
        part = corpus_rows(repos=1, files_per_repo=count, languages=("kotlin",))
        for row in part:
            row["repo"] = f"github.com/owner{repo}/lib"
            row["path"] = f"r{repo}/{row['path']}"
        rows += part
    return rows


def test_too_few_repositories_fall_back_within_one_and_say_so(tmp_path: Path, caplog) -> None:
    # 4 repositories of 40/35/15/10 files: no set of whole repositories is 5% (valid).
    rows = skewed_rows((40, 35, 15, 10))
    corpus = write_corpus(tmp_path / "corpus", rows)
    with caplog.at_level(logging.WARNING):
        _, dataset, stats = run_build(
            corpus,
            tmp_path / "ds",
            fim_rate=0.0,
            split_by="repo",
            valid_fraction=0.05,
            test_fraction=0.1,
            max_length=4096,
            decontam={"minhash": False},
        )
    splits = stats["splits"]
    assert splits["valid"]["examples"] > 0 and splits["test"]["examples"] > 0
    for split, asked in (("valid", 0.05), ("test", 0.1)):
        assert abs(splits[split]["share_of_tokens"] - asked) <= asked / 2, (split, splits[split])
    plan = stats["split_plan"]
    assert plan["by"] == "repo" and plan["asked"] == {"valid": 0.05, "test": 0.1}
    # every repository is listed with the files it gave each split; the files add up
    assert sum(n for counts in plan["repositories"].values() for n in counts.values()) == len(rows)
    assert set(plan["repositories"]) == {r["repo"] for r in rows}
    carved = plan["carved_within_repositories"]
    assert "valid" in carved
    shared = [repo for repo, counts in plan["repositories"].items() if len(counts) > 1]
    assert shared and set(shared) <= {repo for repos in carved.values() for repo in repos}
    assert any(w.startswith("valid:") for w in stats["warnings"])
    assert any("valid:" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # no file is in two splits, even when a repository is
    paths = [row["path"] for split in dataset for row in dataset[split]]
    by_split = {split: set(dataset[split]["path"]) for split in dataset}
    assert not (by_split["train"] & by_split["valid"]) and not (by_split["train"] & by_split["test"])
    assert len(set(paths)) == len(rows)


def test_an_empty_split_is_never_silent(tmp_path: Path, caplog) -> None:
    corpus = write_corpus(tmp_path / "corpus", corpus_rows(repos=1, files_per_repo=2))
    with caplog.at_level(logging.WARNING):
        _, dataset, stats = run_build(
            corpus,
            tmp_path / "ds",
            fim_rate=0.0,
            valid_fraction=0.2,
            test_fraction=0.2,
            decontam={"minhash": False},
        )
    empty = [s for s in ("valid", "test") if len(dataset[s]) == 0]
    assert empty
    for split in empty:
        assert any(w.startswith(f"{split} is empty") for w in stats["warnings"]), stats["warnings"]
        assert any(f"{split} is empty" in r.getMessage() for r in caplog.records)


def test_many_repositories_give_close_fractions_with_whole_repositories() -> None:
    rng = random.Random(5)
    docs = []
    for repo in range(30):
        for f in range(rng.choice((1, 2, 5, 20, 60))):
            docs.append({"path": f"f{f}.kt", "repo": f"r{repo}", "text": "x" * rng.randrange(200, 4000)})
    total = sum(len(d["text"]) for d in docs)
    for seed in range(6):
        plan = plan_splits(docs, 0.05, 0.1, seed, "repo")
        assert not plan.carved and not plan.warnings
        for split, asked in (("valid", 0.05), ("test", 0.1)):
            share = sum(len(d["text"]) for d, s in zip(docs, plan.labels, strict=True) if s == split) / total
            assert abs(share - asked) <= asked / 4, (seed, split, share)
        assert all(len(counts) == 1 for counts in plan.repositories.values())  # whole repositories
    assert len({tuple(plan_splits(docs, 0.05, 0.1, seed, "repo").labels) for seed in range(6)}) > 1


@pytest.mark.parametrize("by", ["repo", "file"])
def test_split_assignment_never_separates_a_group(by: str) -> None:
    docs = [{"path": f"f{i % 7}.py", "repo": f"r{i % 5}", "text": ""} for i in range(100)]
    plan = plan_splits(docs, 0.1, 0.2, seed=3, split_by=by, fallback=False)
    seen: dict[str, str] = {}
    for doc, label in zip(docs, plan.labels, strict=True):
        key = doc["repo"] if by == "repo" else doc["repo"] + doc["path"]
        assert seen.setdefault(key, label) == label
    assert set(plan.labels) == {"train", "valid", "test"}
    if by == "repo":  # 20% per repository cannot make 10%: said, not hidden
        assert any(w.startswith("valid is 20.0%") for w in plan.warnings), plan.warnings


def test_a_dominant_repository_does_not_become_the_test_split() -> None:
    docs = [{"path": f"big{i}.py", "repo": "big"} for i in range(90)]
    docs += [{"path": f"s{i}.py", "repo": f"small{i}"} for i in range(10)]
    assert resolve_split_by(docs, "auto") == "file"
    for seed in range(5):
        labels = plan_splits(docs, 0.05, 0.1, seed, "repo").labels
        assert labels.count("test") <= 20 and labels.count("train") >= 80


def three_repositories_one_dominant() -> list[dict]:
    """Three real-looking repositories, one with half the files (the issue's Kotlin/Elm/Lua set)."""
    return skewed_rows((30, 20, 10))


@pytest.mark.parametrize("split_by", ["auto", "repo"])
def test_impossible_whole_repository_splits_are_said_plainly(tmp_path: Path, split_by: str, caplog) -> None:
    rows = three_repositories_one_dominant()
    corpus = write_corpus(tmp_path / "corpus", rows)
    with caplog.at_level(logging.WARNING):
        _, _, stats = run_build(
            corpus,
            tmp_path / "ds",
            fim_rate=0.0,
            split_by=split_by,
            max_length=4096,
            decontam={"minhash": False},
        )
    plain = [w for w in stats["warnings"] if w.startswith("whole-repository splits are impossible")]
    assert len(plain) == 1, stats["warnings"]
    assert "github.com/owner0/lib holds 30 of the 60 files" in plain[0]
    assert "split_by: directory" in plain[0] and "split_by: time" in plain[0]
    assert any(r.getMessage() == plain[0] for r in caplog.records)
    shared = [repo for repo, counts in stats["split_plan"]["repositories"].items() if len(counts) > 1]
    assert shared  # held-out files do share repositories with train: said, never silent


def test_split_by_directory_keeps_every_directory_in_one_split(tmp_path: Path) -> None:
    rows = corpus_rows(repos=1, files_per_repo=40, languages=("kotlin",))
    for k, row in enumerate(rows):
        row["path"] = f"src/feature{k % 10}/File{k}.kt"
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=0.0,
        split_by="directory",
        valid_fraction=0.1,
        test_fraction=0.2,
        max_length=4096,
        decontam={"minhash": False},
    )
    assert stats["split_by"] == "directory"
    where: dict[str, set[str]] = {}
    for split in dataset:
        for path in dataset[split]["path"]:
            where.setdefault(path.rsplit("/", 1)[0], set()).add(split)
    assert all(len(splits) == 1 for splits in where.values()), where
    assert {split for splits in where.values() for split in splits} == {"train", "valid", "test"}
    assert stats["splits"]["valid"]["share_of_examples"] == pytest.approx(0.1, abs=0.05)
    assert stats["splits"]["test"]["share_of_examples"] == pytest.approx(0.2, abs=0.05)


def git_repository(folder: Path, commits: list[tuple[int, dict[str, str]]]) -> Path:
    """A real git repository whose commits (at the given Unix times) write the given files."""
    import os
    import subprocess

    folder.mkdir(parents=True)
    run = lambda *args, when=0: subprocess.run(  # noqa: E731
        ["git", "-C", str(folder), *args],
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"},
    )
    run("init", "-q")
    run("config", "user.email", "dev@example.com")
    run("config", "user.name", "Dev")
    for when, files in commits:
        for path, text in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
        run("add", "-A")
        run("commit", "-q", "-m", f"at {when}", when=when)
    return folder


def test_split_by_time_holds_out_the_newest_commits_files(tmp_path: Path) -> None:
    texts = {
        row["path"].replace("src/file", "src/m/F"): row["content"]
        for row in corpus_rows(repos=1, files_per_repo=10, languages=("kotlin",))
    }
    paths = sorted(texts)
    repo = git_repository(
        tmp_path / "app",
        [
            (1_600_000_000, texts),
            (1_650_000_000, {paths[3]: texts[paths[3]] + "// changed\n"}),
            (1_700_000_000, {paths[7]: texts[paths[7]] + "// changed again\n"}),
        ],
    )
    rows = [corpus_row(path, (repo / path).read_text(), repo=str(repo)) for path in paths]
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=0.0,
        split_by="time",
        valid_fraction=0.1,
        test_fraction=0.1,
        max_length=4096,
        decontam={"minhash": False},
    )
    assert stats["split_by"] == "time"
    assert dataset["test"]["path"] == [paths[7]]  # changed last
    assert dataset["valid"]["path"] == [paths[3]]  # changed just before
    assert sorted(dataset["train"]["path"]) == sorted(set(paths) - {paths[3], paths[7]})
    # a corpus that cannot say when its files changed is a clear error, and nothing is written
    other = write_corpus(tmp_path / "other", corpus_rows(repos=1, files_per_repo=4))
    with pytest.raises(InputError, match="split_by: time needs when each file last changed"):
        run_build(other, tmp_path / "none", split_by="time")
    assert not (tmp_path / "none").exists()
