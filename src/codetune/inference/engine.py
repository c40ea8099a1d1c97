"""Compatibility names: generation lives in ``codetune.generation``."""

from codetune.generation.api import generate, generate_completions
from codetune.generation.engines.hf import DEFAULT_TOKEN_BUDGET, plan_batches, run_batch
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import (
    Completion,
    Sequence,
    advance,
    context_length,
    is_seq2seq,
    stop_token_ids,
)

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "Completion",
    "SamplingParams",
    "Sequence",
    "advance",
    "context_length",
    "generate",
    "generate_completions",
    "is_seq2seq",
    "plan_batches",
    "run_batch",
    "stop_token_ids",
]
