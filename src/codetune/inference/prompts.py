"""Fill-in-the-Middle prompts per model family, chosen from the tokenizer's sentinels, not the model name.

Prompts are built as token ids: each piece of text is encoded on its own and the sentinels are
inserted by id, so a sentinel is never split by the tokenizer nor produced from user text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from codetune.errors import CodetuneError
from codetune.modeling.special_tokens import FimTokens, fim_tokens

FimLayout = Callable[[Any, FimTokens, str, str], list[int]]
LAYOUTS: dict[str, FimLayout] = {}


def register_layout(family: str) -> Callable[[FimLayout], FimLayout]:
    """Register how one family lays out prefix and suffix (default: StarCoder's PSM)."""

    def wrap(fn: FimLayout) -> FimLayout:
        LAYOUTS[family] = fn
        return fn

    return wrap


def _ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of user text; sentinels spelled inside it stay text (a file may mention them)."""
    if not text:
        return []
    try:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    except TypeError:
        return tokenizer(text, add_special_tokens=False)["input_ids"]


def _tok(tokenizer: Any, token: str) -> int:
    return int(tokenizer.convert_tokens_to_ids(token))


@register_layout("psm")
def psm(tokenizer: Any, fim: FimTokens, prefix: str, suffix: str) -> list[int]:
    """<prefix>PREFIX<suffix>SUFFIX<middle>: StarCoder, SantaCoder, Qwen-Coder, codetune's added tokens."""
    return [
        _tok(tokenizer, fim.prefix),
        *_ids(tokenizer, prefix),
        _tok(tokenizer, fim.suffix),
        *_ids(tokenizer, suffix),
        _tok(tokenizer, fim.middle),
    ]


@register_layout("codellama")
def codellama(tokenizer: Any, fim: FimTokens, prefix: str, suffix: str) -> list[int]:
    """BOS ▁<PRE> PREFIX ▁<SUF> SUFFIX ▁<MID>, as CodeLlama was trained (suffix with a leading space)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [
        *bos,
        _tok(tokenizer, fim.prefix),
        *_ids(tokenizer, prefix),
        _tok(tokenizer, fim.suffix),
        *_ids(tokenizer, " " + suffix if suffix else suffix),
        _tok(tokenizer, fim.middle),
    ]


@register_layout("deepseek")
def deepseek(tokenizer: Any, fim: FimTokens, prefix: str, suffix: str) -> list[int]:
    """<｜fim▁begin｜>PREFIX<｜fim▁hole｜>SUFFIX<｜fim▁end｜>, after the BOS DeepSeek-Coder expects."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return psm(tokenizer, fim, prefix, suffix) if not bos else bos + psm(tokenizer, fim, prefix, suffix)


def layout_for(fim: FimTokens) -> FimLayout:
    """The layout registered for a family (PSM when none is)."""
    return LAYOUTS.get(fim.family, LAYOUTS["psm"])


def fim_prompt(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """Token ids of the FIM prompt for this tokenizer; CodetuneError when it has no FIM tokens."""
    fim = fim_tokens(tokenizer)
    if fim is None:
        raise CodetuneError(
            "this model's tokenizer has no fill-in-the-middle tokens (StarCoder, SantaCoder, CodeLlama, "
            "DeepSeek-Coder, Qwen-Coder or tokens added by a codetune run), so a suffix cannot be used"
        )
    return layout_for(fim)(tokenizer, fim, prefix, suffix)


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
