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


def all_rows(dataset: Any) -> list[tuple[str, dict]]:
    return [(split, row) for split in dataset for row in dataset[split]]
