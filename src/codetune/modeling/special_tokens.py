"""Fill-in-the-Middle sentinel tokens per model family, read from the tokenizer's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


@dataclass(frozen=True)
class FimTokens:
    """The sentinels one family uses. ``pad`` is None for families without a FIM pad token."""

    family: str
    prefix: str
    suffix: str
    middle: str
    pad: str | None = None
    eot: str | None = None

    @property
    def all(self) -> list[str]:
        return [t for t in (self.prefix, self.suffix, self.middle, self.pad, self.eot) if t]


# Order matters: the first family whose prefix, suffix and middle are all in the vocabulary wins.
FAMILIES: tuple[FimTokens, ...] = (
    FimTokens("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"),
    FimTokens("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"),
    FimTokens("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>"),
    FimTokens("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    FimTokens("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", None, "▁<EOT>"),
)
DEFAULT_FAMILY = FAMILIES[0]


def fim_tokens(tokenizer: Any) -> FimTokens | None:
    """The FIM sentinels a tokenizer carries, or None when it has none."""
    vocab = tokenizer.get_vocab()
    for family in FAMILIES:
        if all(token in vocab for token in (family.prefix, family.suffix, family.middle)):
            return family
    return None


def ensure_fim_tokens(tokenizer: Any) -> tuple[FimTokens, int]:
    """Return the tokenizer's FIM sentinels, adding StarCoder's when it has none.

    Returns the tokens and how many were added (the model's embeddings must then be resized).
    """
    found = fim_tokens(tokenizer)
    if found is not None:
        return found, 0
    added = tokenizer.add_special_tokens({"additional_special_tokens": DEFAULT_FAMILY.all})
    return DEFAULT_FAMILY, added
