"""Old names of the FIM family lookup; the registry itself is :mod:`codetune.fim`."""

from __future__ import annotations

from typing import Any

from codetune.fim import FAMILIES as _REGISTRY
from codetune.fim import FimFamily, FimFormat

FimTokens = FimFamily
FAMILIES: tuple[FimFamily, ...] = tuple(_REGISTRY.values())


def fim_tokens(tokenizer: Any) -> FimFamily | None:
    """The FIM family a tokenizer carries, or None (see :meth:`codetune.fim.FimFormat.from_tokenizer`)."""
    found = FimFormat.from_tokenizer(tokenizer)
    return None if found is None else found.family


def ensure_fim_tokens(tokenizer: Any) -> tuple[FimFamily, int]:
    """The tokenizer's FIM family, adding codetune's when it has none; and how many tokens were added."""
    fmt, added = FimFormat.ensure(tokenizer)
    return fmt.family, added
