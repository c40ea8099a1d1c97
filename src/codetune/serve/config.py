"""Configuration of the completion server."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from codetune.schema import StrictModel

# Names clients send as `model` (Ollama's `name:tag` included); never peft's reserved `__base__`.
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# The model names editors send when configured as the docs show (docs/editors.md) or left at their
# defaults: the docs' `codetune`, Continue's Mistral provider (`codestral-latest`), Copilot's and
# FauxPilot's engines (`copilot-codex`, `codegen`). Each means the base model.
DEFAULT_MODEL_ALIASES = ("codetune", "codestral-latest", "codegen", "copilot-codex")


class ServeConfig(StrictModel):
    """Serve a model over an OpenAI-compatible HTTP API."""

    model: str = Field(
        "tiny-gpt-bigcode", description="Hub id, local path, preset, run folder or merged model."
    )
    adapter: Path | None = Field(None, description="Run folder (or adapter folder) served unmerged.")
    adapters: dict[str, Path] = Field(
        default_factory=dict,
        description="Named LoRA adapters (NAME: run folder) served over the one base model, unmerged: a "
        "request's `model` field picks one by NAME, the base's served name (or no name) the base alone.",
    )
    served_name: str | None = Field(None, description="Model id reported by /v1/models (default: --model).")
    model_aliases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODEL_ALIASES),
        description="Other model names a request may send for the base model (editors' defaults); any "
        "other unknown name is a 404 listing what is served.",
    )
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(
        None,
        description="When set, requests need `Authorization: Bearer KEY` (or `X-Api-Key: KEY`). Give it "
        "in the CODETUNE_API_KEY environment variable: an --api-key argument shows in `ps`.",
        json_schema_extra={"env": "CODETUNE_API_KEY"},
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS allow-list, e.g. http://localhost:3000); "
        "none by default.",
    )
    device: str | None = Field(None, description="cuda, mps or cpu (default: the best available).")
    batching: Literal["continuous", "micro"] = Field(
        "continuous",
        description="continuous: rows join and leave between decode steps (causal models); "
        "micro: whole batches of model.generate (always used for seq2seq).",
    )
    engine: Literal["hf", "llamacpp"] = Field(
        "hf",
        description="hf: transformers (every model; adapters; batching as --batching says); llamacpp: "
        "--model must be a GGUF file, run as it is by llama.cpp (llama-cpp-python), one row at a time, "
        "much faster on a CPU; no adapters (export a run to GGUF and serve that file).",
    )
    threads: int | None = Field(
        None, gt=0, description="CPU threads of the llamacpp engine (default: every core)."
    )
    max_batch_size: int = Field(16, gt=0, description="Most sequences sharing one forward pass.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long the micro-batcher waits for company.")
    batch_regroup_ms: float = Field(
        200.0, ge=0, description="Most extra wait for the last batch's clients to come back (closed loops)."
    )
    max_queue: int = Field(
        64,
        gt=0,
        description="Sequences queued or running before 503 (a client within its fair share of a full "
        "queue is still queued, up to twice this).",
    )
    reserve_for_new_clients: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of the batch (rows and KV token budget) only a client with nothing running may "
        "take: a newcomer starts at once while others hold the rest (0: first come, first served).",
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body (413 above).")
    body_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client has to send its whole request body (408 after)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send a request's headers (from its opening, or from the "
        "previous answer); closed with a 408 after.",
    )
    shutdown_timeout_s: float = Field(
        5.0, gt=0, description="Seconds in-flight requests get on SIGTERM before they are cut off."
    )
    max_tokens_limit: int = Field(2048, gt=0, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(16, gt=0, description="max_tokens when a request gives none.")
    context_length: int | None = Field(
        None, gt=0, description="Prompt + completion limit (default: model's)."
    )
    postprocess: bool = Field(True, description="Line/block clean-up of FIM completions (per request too).")
    kv_token_budget: int = Field(
        65536, gt=0, description="Most KV-cache tokens (rows x padded width) continuous batching admits."
    )
    fused_prefill_tokens: int = Field(
        512,
        ge=0,
        description="Rows joining a running batch are prefilled inside its next decode step while "
        "(running + joining rows) x the longest joiner's new tokens stays within this (0: apart).",
    )
    prefix_cache: bool = Field(
        True,
        description="Reuse the KV of the longest cached token prefix of earlier prompts (an editor re-sends "
        "nearly the same prefix on every keystroke); continuous batching only.",
    )
    prefix_cache_mb: float = Field(
        512.0, ge=0, description="Memory the prefix cache may hold (least recently used entries go first)."
    )
    fim_prefix_ratio: float = Field(
        0.75, gt=0, lt=1, description="Share of a trimmed FIM prompt kept for the prefix (the rest: suffix)."
    )
    strict_fim: bool = Field(
        False,
        description="400 for a suffix sent to a model without FIM tokens (default: prefix only + warning).",
    )
    repos: list[Path] = Field(
        default_factory=list,
        description="Repository folders indexed for context (--repo, repeatable): when a request sends no "
        "context, the server retrieves it from the repository of the request's file, and from no other.",
    )
    repo_refresh_s: float = Field(
        2.0,
        ge=0,
        description="Least seconds between two scans of the repositories for added, edited or deleted "
        "files (a stat per file, when a request comes; a changed repository is indexed again).",
    )
    context_tokens: int = Field(
        512,
        ge=0,
        description="Token budget of repository context per request: the editor's snippets first, then "
        "what the server retrieves; 0 = none.",
    )
    record: Path | None = Field(
        None,
        description="Records folder: every suggestion served (its id, client, model and adapter, language, "
        "file path, prefix, suffix, text, finish reason, latency, mean token log-probability) and the "
        "editor's events about it (/v1/events, /v1/feedback) are appended to daily JSONL files here. Off "
        "by default; nothing leaves the machine (docs/editors.md).",
    )
    continue_log: Path | None = Field(
        None,
        description="Continue's autocomplete dev-data file (~/.continue/dev_data/0.2.0/autocomplete.jsonl), "
        "followed while the server runs: each outcome Continue appends joins the suggestion this server "
        "made for it (same prefix, suffix and text) or is kept as its own. Needs --record DIR, where the "
        "read position is kept: a restart imports nothing twice. A link is refused.",
    )
    continue_poll_s: float = Field(
        1.0, gt=0, description="--continue-log: seconds between two looks at the file for new lines."
    )
    record_max_bytes: int = Field(1024**3, gt=0, description="Size cap of the records folder.")
    record_when_full: Literal["stop", "rotate"] = Field(
        "stop",
        description="At the size cap: stop keeping new records (a warning; nothing recorded is removed), or "
        "rotate: remove the oldest day-files to make room (a warning names each).",
    )
    min_confidence: str | None = Field(
        None,
        description="Answer a suggestion empty (recorded as withheld) when its mean token log-probability "
        "is under this: a number (e.g. -1.5), or auto (fitted at start-up on the --record folder's "
        "suggestions with feedback, keeping min_confidence_keep of the accepted ones).",
    )
    min_confidence_keep: float = Field(
        0.95, gt=0, le=1, description="--min-confidence auto: share of the accepted suggestions kept."
    )
    cut_below: str | None = Field(
        None,
        description="Answer each suggestion only up to its first token whose log-probability is under "
        "this: a number (e.g. -2), or auto (fitted at start-up on the --record folder's suggestions, "
        "the floor under which they would have had the most characters accepted).",
    )
    adapter_dir: Path | None = Field(
        None,
        description="Folder POST /admin/adapters rolls new adapters out from (a path in it, or a name "
        "relative to it; paths and links leading out of it are refused). Without it no adapter is swapped in.",
    )
    log_level: str = Field("info", description="uvicorn log level.")

    @field_validator("min_confidence", "cut_below")
    @classmethod
    def _confidence_spec(cls, spec: str | None, info: ValidationInfo) -> str | None:
        if spec is None or spec.strip().lower() == "auto":
            return spec
        what = (
            "mean log-probability (e.g. -1.5)"
            if info.field_name == "min_confidence"
            else "log-probability (e.g. -2)"
        )
        try:
            value = float(spec)
        except ValueError:
            raise ValueError(f"use auto or a {what}, not {spec!r}") from None
        if not (math.isfinite(value) and value <= 0):
            raise ValueError(f"{spec}: a {what.split(' (')[0]} is a finite number <= 0")
        return spec

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, Path]) -> dict[str, Path]:
        for name in adapters:
            if not ADAPTER_NAME.fullmatch(name):
                raise ValueError(
                    f"adapter name {name!r}: use letters, digits and . _ : - (at most 64 characters)"
                )
        return adapters

    @model_validator(mode="after")
    def _one_way_to_adapt(self) -> ServeConfig:
        if self.adapter is not None and self.adapters:
            raise ValueError("give either adapter (one run, served as the model) or named adapters, not both")
        if (
            self.min_confidence is not None
            and self.min_confidence.strip().lower() == "auto"
            and not self.record
        ):
            raise ValueError("min_confidence auto is fitted on the records of --record DIR: give one")
        if self.cut_below is not None and self.cut_below.strip().lower() == "auto" and not self.record:
            raise ValueError("cut_below auto is fitted on the records of --record DIR: give one")
        if self.continue_log is not None and not self.record:
            raise ValueError("continue_log is imported into the records folder of --record DIR: give one")
        if self.continue_log is not None and self.continue_log.expanduser().is_symlink():
            raise ValueError(
                f"continue_log {self.continue_log} is a link: give the file it points to (a link is not followed)"
            )
        if self.engine == "llamacpp" and (self.adapter is not None or self.adapters or self.adapter_dir):
            raise ValueError(
                "engine llamacpp serves one GGUF file without adapters: merge and export the run "
                "(codetune export RUN --format gguf --out FILE.gguf) and serve that file"
            )
        base = self.served_name or self.model
        if base in self.adapters:
            raise ValueError(f"adapter name {base!r} is the base model's served name; pick another")
        aliased = sorted(set(self.adapters) & set(self.model_aliases))
        if aliased:
            raise ValueError(f"adapter name {aliased[0]!r} is an alias of the base model (model_aliases)")
        return self

    @field_validator("repos")
    @classmethod
    def _repos_are_folders(cls, repos: list[Path]) -> list[Path]:
        # checked before the model loads: a typo in --repo should not cost a model load
        missing = [str(path) for path in repos if not Path(path).expanduser().is_dir()]
        if missing:
            raise ValueError(f"not a folder: {', '.join(missing)}")
        return repos
