"""``windows``: sliding prompt -> completion pairs over each file (the Kotlin use case)."""

from __future__ import annotations

from typing import Any

from codetune.dataset.formats.base import Batch, Format, empty, origin, tokenize


class Windows(Format):
    """Sliding prompt/completion windows with boundaries snapped to punctuation or line ends."""

    name = "windows"
    prompted = True

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        opts = self.cfg.windows
        out = empty(self.columns())
        encoded = tokenize(tokenizer, batch["text"], offsets=True)
        for i, text in enumerate(batch["text"]):
            starts = sorted({start for start, end in encoded["offset_mapping"][i] if end > start})
            for prompt, completion in windows(
                text,
                starts,
                opts.prompt_tokens,
                opts.completion_tokens,
                opts.stride,
                opts.snap_chars,
                opts.min_completion_tokens,
            ):
                out["prompt"].append(prompt)
                out["completion"].append(completion)
                out["text"].append(prompt + completion)
                origin(out, batch, i)
        return out


def windows(
    text: str, starts: list[int], p: int, c: int, stride: int | None, snap: str, min_completion: int = 1
) -> list[tuple[str, str]]:
    """(prompt, completion) pairs over one text; ``starts`` are the character starts of its tokens.

    The completion start moves by ``stride`` tokens (None: completions tile the text); the prompt is
    the up-to-``p`` tokens before it. Both cut points snap back to just after a ``snap`` character.
    """
    n = len(starts)
    if n < 2:
        return []
    bounds = [*starts, len(text)]

    def snapped(target: int, low: int) -> int:
        """The latest token boundary in (low, target] that follows a snap character, else target."""
        if target >= n:
            return n
        for k in range(target, low, -1):
            pos = bounds[k]
            if text[pos - 1] in snap or text[pos] == "\n":
                return k
        return target

    # The first completion starts after P tokens, or earlier in a short text (so it still gets a pair).
    first = p if n > p + c else max(1, n * p // (p + c))
    cut = snapped(first, first // 2)
    pairs = []
    while cut < n - min_completion + 1:
        end = snapped(min(cut + c, n), cut + max(1, min(c, n - cut) // 2))
        prompt = text[bounds[max(cut - p, 0)] : bounds[cut]]
        completion = text[bounds[cut] : bounds[end]]
        if end - cut >= min_completion and completion.strip():
            pairs.append((prompt, completion))
        if end >= n:
            break
        cut = end if stride is None else snapped(cut + stride, cut)
    return pairs
