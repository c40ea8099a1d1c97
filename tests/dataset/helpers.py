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


def units_of(tmp_path: Path, files: dict[str, str], name: str = "ds", **units: Any) -> list[str]:
    """The unit texts ``--format units`` cuts from ``files`` (path -> content, the language from the
    path), in one repository, all in train, in order."""
    from codetune.languages import language_for_path

    from .conftest import write_corpus

    rows = []
    for path, content in files.items():
        language = language_for_path(path)
        assert language is not None, path
        rows.append(
            {
                "path": path,
                "repo": "repo",
                "language": language.name,
                "content": content,
                "bytes": len(content),
                "lines": content.count("\n"),
                "sha256": path,
            }
        )
    corpus = write_corpus(tmp_path / f"corpus-{name}", rows)
    _, dataset, _ = run_build(
        corpus,
        tmp_path / name,
        format="units",
        fim_rate=0.0,
        max_length=4096,
        valid_fraction=0.0,
        test_fraction=0.0,
        decontam={"minhash": False},
        units=units,
    )
    return list(dataset["train"]["text"])


def all_rows(dataset: Any) -> list[tuple[str, dict]]:
    return [(split, row) for split in dataset for row in dataset[split]]
