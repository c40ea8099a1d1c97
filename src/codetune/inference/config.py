"""Configuration of batch generation."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from codetune.config import StrictModel


class GenerateConfig(StrictModel):
    """Generate completions for a JSONL file of prompts."""

    model: str = "tiny-gpt-bigcode"
    adapter: Path | None = None
    input: Path | None = None
    out: Path | None = None
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
