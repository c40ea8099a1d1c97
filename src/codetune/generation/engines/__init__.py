"""The engine registry: one name, one class, for every path (the Python API, generate, eval, serve).

``continuous``: token-level continuous batching (HF transformers; seq2seq models get static batches);
``static``: whole batches of ``model.generate`` (beam search, seq2seq); ``vllm``: vLLM, offline only;
``llamacpp``: a GGUF file through llama.cpp, one row at a time (serve).
Two configs spell a row their own way, kept for the recipes that use them (``ALIASES``): generate's
``engine: hf`` is the HF engine, continuous batching; serve's ``batching: micro`` is the static one.

Adding an engine: a module here with an ``Engine`` subclass (``over`` a loaded model, or ``load`` its
own; ``check`` what it refuses) and one ``register_engine`` line below.
"""

from __future__ import annotations

from typing import Any

from codetune.errors import ConfigError
from codetune.generation.engines.base import Engine, QueueFull
from codetune.generation.engines.continuous import ContinuousEngine
from codetune.generation.engines.hf import StaticEngine
from codetune.generation.engines.llamacpp import LlamaCppEngine
from codetune.generation.engines.vllm import VllmEngine

ENGINES: dict[str, type[Engine]] = {}
ALIASES = {"hf": "continuous", "micro": "static"}


def register_engine(name: str, cls: type[Engine]) -> type[Engine]:
    """Add an engine class under ``name``."""
    if name in ENGINES or name in ALIASES:
        raise ValueError(f"engine {name!r} registered twice")
    ENGINES[name] = cls
    return cls


register_engine("continuous", ContinuousEngine)
register_engine("static", StaticEngine)
register_engine("vllm", VllmEngine)
register_engine("llamacpp", LlamaCppEngine)


def engine_class(name: str) -> type[Engine]:
    """The registered engine ``name`` (or a config's alias of one) names; ConfigError for none."""
    cls = ENGINES.get(ALIASES.get(name, name))
    if cls is None:
        known = ", ".join([*ENGINES, *ALIASES])
        raise ConfigError(f"unknown engine {name!r}; known: {known}")
    return cls


def engine_for(model: Any, tokenizer: Any, name: str = "continuous", **options: Any) -> Engine:
    """An engine over a loaded model (a seq2seq model always gets static batches)."""
    return engine_class(name).over(model, tokenizer, **options)


def load_engine(name: str, ref: Any, tokenizer: Any, *, device: str | None = None, **options: Any) -> Engine:
    """An engine that loads the model ``ref`` (a resolved ``ModelRef``) names."""
    return engine_class(name).load(ref, tokenizer, device=device, **options)


__all__ = [
    "ALIASES",
    "ENGINES",
    "Engine",
    "QueueFull",
    "engine_class",
    "engine_for",
    "load_engine",
    "register_engine",
]
