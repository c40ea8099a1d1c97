"""Small helpers shared by the build tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.dataset.builder import build
from codetune.dataset.config import BuildConfig
from codetune.stage import StageResult


def run_build(corpus: Path, out: Path, **options: Any) -> tuple[StageResult, Any, dict]:
    """Build and load back: (result, DatasetDict, stats)."""
    import json

    from datasets import load_from_disk

    options.setdefault("num_proc", 1)
    result = build(BuildConfig(corpus=corpus, out=out, **options))
    stats = json.loads((out / "stats.json").read_text())
    return result, load_from_disk(str(out)), stats


# Every document in train, nothing dropped as a near-duplicate: a build whose rows a test reads whole.
TRAIN_ONLY: dict[str, Any] = {"valid_fraction": 0.0, "test_fraction": 0.0, "decontam": {"minhash": False}}


def corpus_row(path: str, content: str, repo: str = "repo", language: str | None = None) -> dict[str, Any]:
    """One corpus row as collect writes it (the language from the path unless given)."""
    from codetune.languages import language_for_path

    found = language or getattr(language_for_path(path), "name", "")
    assert found, path
    return {
        "path": path,
        "repo": repo,
        "language": found,
        "content": content,
        "bytes": len(content.encode()),
        "lines": content.count("\n"),
        "sha256": path,
    }


def units_of(tmp_path: Path, files: dict[str, str], name: str = "ds", **units: Any) -> list[str]:
    """The unit texts ``--format units`` cuts from ``files`` (path -> content, the language from the
    path), in one repository, all in train, in order."""
    from .conftest import write_corpus

    rows = [corpus_row(path, content) for path, content in files.items()]
    corpus = write_corpus(tmp_path / f"corpus-{name}", rows)
    _, dataset, _ = run_build(
        corpus,
        tmp_path / name,
        format="units",
        fim_rate=0.0,
        max_length=4096,
        units=units,
        **TRAIN_ONLY,
    )
    return list(dataset["train"]["text"])


def all_rows(dataset: Any) -> list[tuple[str, dict]]:
    return [(split, row) for split in dataset for row in dataset[split]]
