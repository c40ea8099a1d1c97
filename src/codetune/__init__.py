"""codetune: turn an open code LLM into a specialist for a language or codebase."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from codetune.fim import FimFormat
    from codetune.generation.api import CodeModel
    from codetune.modeling.loading import load_tokenizer


def __getattr__(name: str) -> Any:
    # Importing torch and transformers takes seconds; only pay for it when the API is used.
    if name == "CodeModel":
        from codetune.generation.api import CodeModel

        return CodeModel
    if name == "load_tokenizer":
        from codetune.modeling.loading import load_tokenizer

        return load_tokenizer
    if name == "FimFormat":
        from codetune.fim import FimFormat

        return FimFormat
    if name == "pipeline":
        from codetune.generation.api import pipeline

        return pipeline
    raise AttributeError(f"module 'codetune' has no attribute {name!r}")


__all__ = ["CodeModel", "FimFormat", "__version__", "load_tokenizer", "pipeline"]
