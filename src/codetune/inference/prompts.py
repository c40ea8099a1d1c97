"""Prompts: plain, fill-in-the-middle (laid out by :mod:`codetune.fim`) and chat."""

from __future__ import annotations

from typing import Any

from codetune.fim import FimFormat, no_fim_error


def fim_format(tokenizer: Any) -> FimFormat | None:
    """The tokenizer's FIM format, or None when it has no FIM tokens."""
    return FimFormat.from_tokenizer(tokenizer)


def fim_prompt(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """Token ids of the FIM prompt for this tokenizer; CodetuneError when it has no FIM tokens."""
    fmt = fim_format(tokenizer)
    if fmt is None:
        raise no_fim_error()
    return fmt.prompt(prefix, suffix)


def build_prompt(tokenizer: Any, prefix: str, suffix: str | None = None) -> str | list[int]:
    """A plain prompt (text) or, with a suffix, the family's FIM prompt (ids)."""
    return prefix if suffix is None else fim_prompt(tokenizer, prefix, suffix)


PLAIN_CHAT_TEMPLATE = "### {role}:\n{content}\n\n"


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
    """Render chat messages with the tokenizer's chat template, or a plain one; returns (prompt, stops)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, []
    text = "".join(
        PLAIN_CHAT_TEMPLATE.format(role=m["role"].capitalize(), content=m["content"]) for m in messages
    )
    return text + "### Assistant:\n", ["\n### "]
