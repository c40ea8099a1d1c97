"""The engine registry: one name, one class; ``engine_for`` picks the right one for a model."""

from __future__ import annotations

from typing import Any

from codetune.generation.engines.base import Engine, QueueFull
from codetune.generation.engines.continuous import ContinuousEngine
from codetune.generation.engines.hf import StaticEngine

ENGINES: dict[str, type[Engine]] = {}


def register_engine(name: str, cls: type[Engine]) -> type[Engine]:
    ENGINES[name] = cls
    return cls


register_engine("continuous", ContinuousEngine)
register_engine("static", StaticEngine)


def engine_for(model: Any, tokenizer: Any, name: str = "continuous", **options: Any) -> Engine:
    """An engine over a loaded model; seq2seq models always get static batches.

    (Their decoder cache also holds the encoder's outputs, which the continuous loop does not stack.)
    """
    from codetune.errors import ConfigError
    from codetune.generation.sequence import is_seq2seq

    if name == "vllm":
        raise ConfigError("the vllm engine is built from a model reference: VllmEngine.load(ref, tokenizer)")
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}, vllm")
    if is_seq2seq(model):
        name = "static"
    return ENGINES[name](model, tokenizer, **options)


__all__ = ["ENGINES", "Engine", "QueueFull", "engine_for", "register_engine"]
