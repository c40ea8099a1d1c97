"""Configuration of the train and merge stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from codetune.config import StrictModel


class TrainConfig(StrictModel):
    """Fine-tune a model on a built dataset."""

    model: str = Field("tiny-gpt-bigcode", description="Hub id, local path or tiny preset name.")
    dataset: Path | None = Field(None, description="Dataset folder (default: the build stage's output).")
    method: Literal["lora", "adalora", "qlora", "full"] = "lora"
    out: Path | None = Field(None, description="Run folder (default: WORKDIR/run).")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    lr: float = Field(2e-4, gt=0)
    batch_tokens: int = Field(4096, gt=0, description="Tokens per micro-batch when packing.")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="Default: every linear layer but the LM head.")
    seed: int = 0
    resume: bool = False


class MergeConfig(StrictModel):
    """Merge a run's adapter into its base model."""

    run: Path | None = Field(None, description="Run folder (default: the train stage's output).")
    out: Path | None = Field(None, description="Merged model folder (default: WORKDIR/merged).")
