"""Configuration of the build stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from codetune.config import StrictModel


class BuildConfig(StrictModel):
    """Turn a corpus into a tokenized dataset with train/valid/test splits."""

    corpus: Path | None = Field(None, description="Corpus folder (default: the collect stage's output).")
    format: str = Field(
        "files", description="Dataset format: files, windows, units, instruct, seq2seq, code_json."
    )
    model: str = Field("tiny-gpt-bigcode", description="Model or tokenizer whose tokenizer is used.")
    out: Path | None = Field(None, description="Dataset folder (default: WORKDIR/dataset).")
    max_length: int = Field(512, gt=8, description="Maximum tokens per example.")
    valid_fraction: float = Field(0.05, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    fim_rate: float = Field(0.0, ge=0, le=1, description="Share of causal examples turned into FIM.")
    fim_spm_rate: float = Field(0.5, ge=0, le=1, description="Share of FIM examples in SPM order.")
    seed: int = 0
