"""Configuration of the eval stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from codetune.config import StrictModel


class EvalConfig(StrictModel):
    """Compare models side by side on a dataset's held-out split."""

    models: list[str] = Field(default_factory=list, description="Models or run folders; NAME=PATH names one.")
    dataset: Path | None = Field(None, description="Dataset folder (default: the build stage's output).")
    out: Path | None = Field(None, description="Report folder (default: WORKDIR/report).")
    samples: int = Field(200, gt=0, description="Line-completion samples cut from held-out files.")
    max_new_tokens: int = Field(48, gt=0)
    seed: int = 0
