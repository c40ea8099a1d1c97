"""Fill-in-the-Middle for build: split points (random, syntax), one registry, and which layout a row gets.

A FIM example cuts a text into prefix + middle + suffix (so ``prefix + middle + suffix == text``);
:mod:`codetune.fim` orders the pieces with the model family's sentinels. Pieces are tokenized
separately, so the cut never falls inside a token and decoding each piece gives its text back exactly.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from codetune.fim import FimPieces

__all__ = ["LAYOUTS", "SPLITS", "FimPieces", "choose", "cut", "register_split", "token_starts"]


# --- split points ---------------------------------------------------------------------------------

SplitFn = Callable[[str, "random.Random", dict[str, Any]], "tuple[int, int] | None"]
SPLITS: dict[str, SplitFn] = {}


def register_split(name: str) -> Callable[[SplitFn], SplitFn]:
    """Register a way of choosing the middle: returns character offsets (start, end) or None."""

    def wrap(fn: SplitFn) -> SplitFn:
        SPLITS[name] = fn
        return fn

    return wrap


@register_split("random")
def random_split(text: str, rng: random.Random, info: dict[str, Any]) -> tuple[int, int] | None:
    """Two uniform token boundaries (bigcode's token-level FIM); ``info["offsets"]`` are token starts."""
    offsets: list[int] = info.get("offsets") or list(range(len(text)))
    bounds = [*offsets, len(text)]
    a, b = sorted((rng.randrange(len(bounds)), rng.randrange(len(bounds))))
    return bounds[a], bounds[b]


@register_split("syntax")
def syntax_split(text: str, rng: random.Random, info: dict[str, Any]) -> tuple[int, int] | None:
    """The middle is one whole statement, block or expression of ``info["min_tokens"]`` to
    ``info["max_tokens"]`` tokens (counted from ``info["offsets"]``); None when there is none.

    With ``info["aligned"]`` only nodes that start and end on token boundaries (after taking in
    surrounding whitespace) are chosen: their pieces need no tokenizing of their own, so they fit
    wherever the text fits.
    """
    from codetune.dataset.syntax import middle_nodes

    language = info.get("language")
    if not language:
        return None
    try:
        spans = middle_nodes(text, language, info.get("path"))
    except Exception:  # unknown language or no grammar: the caller falls back to random
        return None
    starts: list[int] = info.get("offsets") or []
    low, high = info.get("min_tokens", 1), info.get("max_tokens", len(starts) or len(text))
    if starts:
        spans = [_snap(text, starts, a, b) for a, b in spans]
        # Tokens overlapping [start, end): those starting inside it, plus one cut at its start.
        spans = [
            (a, b) for a, b in spans if low <= bisect_left(starts, b) - bisect_right(starts, a) + 1 <= high
        ]
        if info.get("aligned"):
            bounds = {*starts, len(text)}
            spans = [(a, b) for a, b in spans if a in bounds and b in bounds]
    return rng.choice(spans) if spans else None


def _snap(text: str, starts: list[int], a: int, b: int) -> tuple[int, int]:
    """Widen a node's span over surrounding whitespace to token boundaries, when that is all it takes.

    A node usually starts inside a token (`` foo`` holds the space before ``foo``); cut there, the
    pieces would be tokenized apart, unlike the whole text. Taking the whitespace into the middle
    keeps the node whole and lets the pieces be sliced from the text's own tokens.
    """
    bounds = [*starts, len(text)]
    before = bounds[max(bisect_right(bounds, a) - 1, 0)]
    after = bounds[min(bisect_left(bounds, b), len(bounds) - 1)]
    if before <= a and not text[before:a].strip():
        a = before
    if after >= b and not text[b:after].strip():
        b = after
    return a, b


def token_starts(offsets: list[tuple[int, int]]) -> list[int]:
    """Character start of each token from a fast tokenizer's offset mapping (monotonic)."""
    starts: list[int] = []
    last = -1
    for start, _ in offsets:
        if start > last:
            starts.append(start)
            last = start
    return starts


def cut(text: str, start: int, end: int) -> FimPieces:
    return FimPieces(text[:start], text[start:end], text[end:])


# --- layouts -----------------------------------------------------------------------------------------

# The orderings a build draws from; codetune.fim lays out their token ids for the tokenizer's family
# (FimFormat.example_ids), the same registry that serving's prompts come from.
LAYOUTS = ("psm", "spm")


def choose(rng: random.Random, fim_rate: float, spm_rate: float) -> str | None:
    """Which layout an example gets (None: left to right), drawn in a fixed order so it is seedable."""
    draw_fim, draw_spm = rng.random(), rng.random()
    if draw_fim >= fim_rate:
        return None
    return "spm" if draw_spm < spm_rate else "psm"
