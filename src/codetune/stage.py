"""What every stage returns, and how default output folders are chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    """The folder or file a stage wrote and a few numbers worth printing."""

    stage: str
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def default_out(out: Path | None, workdir: Path | None, name: str) -> Path:
    """An explicit ``out`` wins; otherwise WORKDIR/NAME (or ./NAME)."""
    if out is not None:
        return Path(out)
    return Path(workdir or ".") / name
