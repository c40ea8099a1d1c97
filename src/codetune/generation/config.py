"""Configuration of batch generation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from codetune.schema import StrictModel


class GenerateConfig(StrictModel):
    """Generate completions for a JSONL file of prompts."""

    model: str = Field(
        "tiny-gpt-bigcode", description="Hub id, local path, preset, run folder or merged model."
    )
    adapter: Path | None = Field(None, description="Run folder (or adapter folder) applied unmerged.")
    input: Path | None = Field(None, description="JSONL file, one object per line with a prompt field.")
    out: Path | None = Field(None, description="JSONL file of results; resumed (ids already done skipped).")
    prompt_field: str = Field("prompt", description="Field holding the prompt (e.g. `intent` for CoNaLa).")
    prompt_template: str | None = Field(
        None,
        description='Build the prompt from several fields, e.g. "{intent}\\n{snippet}" (CoNaLa); '
        "overrides prompt_field.",
    )
    suffix_field: str = Field("suffix", description="Optional field with the text after the cursor (FIM).")
    id_field: str = Field("id", description="Field identifying a row; the line number when absent.")
    output_field: str = Field("completion", description="Field the completion is written to.")
    max_new_tokens: int = Field(64, gt=0)
    min_new_tokens: int = Field(0, ge=0)
    temperature: float = Field(0.0, ge=0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 keeps every token.")
    repetition_penalty: float = Field(1.0, gt=0)
    num_beams: int = Field(1, ge=1, description="Beam search when > 1.")
    n: int = Field(1, ge=1, description="Completions per prompt (a list in `<output_field>s` when > 1).")
    stop: list[str] = Field(default_factory=list, description="Stop sequences.")
    truncate_before_pattern: list[str] = Field(
        default_factory=list, description="Regexes (multi-line); text is cut before the first match."
    )
    postprocess: bool = Field(True, description="End-of-line/block clean-up for FIM rows.")
    seed: int | None = Field(None, description="Seed for sampling.")
    batch_size: int = Field(64, gt=0, description="Most rows per batch.")
    token_budget: int = Field(32768, gt=0, description="Most padded tokens (prompt + new) per batch.")
    engine: Literal["hf", "vllm", "continuous", "static"] = Field(
        "hf",
        description="hf (transformers, continuous batching; static batches for seq2seq) or vllm when "
        "installed; continuous and static name the HF engines themselves.",
    )
    device: str | None = Field(None, description="cuda, mps or cpu (default: the best available).")
    executor: Literal["local", "ray"] = Field(
        "local", description="local, or ray: the rows over a Ray cluster, one engine per task (see address)."
    )
    address: str | None = Field(None, description="Ray cluster address (default: start a local one).")
    engines: int | None = Field(
        None, ge=1, description="With executor ray: engines to run (default: one per GPU, or 1)."
    )
