"""Typed settings of `codetune export`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from codetune.schema import StrictModel


class ExportConfig(StrictModel):
    """Write a run (its adapter merged), a merged model, a preset or a hub model as a GGUF file."""

    model: str | None = Field(
        None,
        description="Run folder, merged model, preset, hub id or GGUF (default: the train stage's output).",
    )
    format: Literal["gguf"] = Field("gguf", description="Output format (GGUF: llama.cpp, Ollama, LM Studio).")
    dtype: Literal["f16", "q8_0", "bf16", "f32"] = Field(
        "f16",
        description="Weight type in the GGUF: f16 (lossless for most checkpoints) or q8_0 (half the size).",
    )
    out: Path | None = Field(None, description="GGUF file to write (default: WORKDIR/model.gguf).")
    modelfile: bool = Field(
        True, description="Also write an Ollama Modelfile beside the GGUF (OUT with .Modelfile for .gguf)."
    )
    check_prompts: int = Field(
        16,
        ge=0,
        description="Greedy prompts (half of them FIM when the model has FIM tokens) completed by the model "
        "and by the GGUF loaded back; the agreement is reported. 0 skips the check.",
    )
    check_tokens: int = Field(24, gt=0, description="New tokens per check prompt.")
