"""Configuration of the collect stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from codetune.config import StrictModel


class CollectConfig(StrictModel):
    """Gather source files of one language and clean them into a corpus."""

    sources: list[str] = Field(default_factory=list, description="Local folders, git URLs/paths, archives.")
    language: str = Field("python", description="Language name from the registry (or added in the recipe).")
    out: Path | None = Field(None, description="Corpus folder (default: WORKDIR/corpus).")
    min_lines: int = Field(3, ge=0, description="Drop files with fewer lines.")
    max_bytes: int = Field(1_000_000, gt=0, description="Drop files larger than this.")
    max_error_fraction: float = Field(0.1, ge=0, le=1, description="Drop files whose parse errors cover more.")
