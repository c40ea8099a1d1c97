"""Cutting a text longer than a row into consecutive blocks that join back to it exactly.

A block ends at a line end when one falls in its second half (at the best-ranked one, when the
caller ranks them: a unit prefers the boundaries between its members), else between two tokens.
A line end is found in the text, not in the tokens: byte-level BPE merges ``"\\n"`` with the next
line's indentation (``"\\n    "`` is one token), so few tokens end with a newline. A block is cut
there anyway and tokenized alone to check that it fits; the check also catches a character split
over several tokens that would not fit once whole. So every block fits its row as it will be
tokenized, and none is trimmed later.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from codetune.dataset.formats.base import Batch, keep_token_spans, tokenize

NEWLINE = re.compile("\n")


def line_starts(text: str) -> dict[int, int]:
    """Every position right after a newline, all of rank 0 (the default cut candidates)."""
    return dict.fromkeys((m.end() for m in NEWLINE.finditer(text) if m.end() < len(text)), 0)


def cut_blocks(
    text: str,
    offsets: list[tuple[int, int]],
    room: int,
    tokenizer: Any,
    boundaries: dict[int, int] | None = None,
    *,
    no_leading_space: bool = False,
) -> list[str]:
    """``text`` (whose tokens have ``offsets``) cut into pieces of at most ``room`` tokens each.

    ``boundaries`` maps character positions where a cut is welcome to a rank (lower is better);
    default: every line start. Among those in a block's second half the best rank wins, the latest
    of equal rank; with none there, the block ends between two tokens. The blocks are tokenized in
    one batch to check them; from the first that does not fit, they are cut again, it shorter.
    With ``no_leading_space`` (a tokenizer that drops a text's leading space, as sentencepiece's
    dummy prefix does: ``" x"`` and ``"x"`` are the same tokens) no block but the first starts with
    a space: the cut moves past the spaces, which end the block before.
    """
    if len(offsets) <= room:
        return [text]
    ranked = line_starts(text) if boundaries is None else boundaries
    positions = sorted(ranked)
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    budgets: dict[int, int] = {}  # block start -> a smaller budget, after it did not fit
    accepted: list[tuple[int, int]] = []  # (start, end) of the blocks that fit
    while True:
        planned, begin_char = [], accepted[-1][1] if accepted else 0
        while begin_char < len(text):
            # The block's first token is the one holding ``begin_char`` (cut inside it) or starting there.
            begin_token = bisect_right(ends, begin_char)
            budget = budgets.get(begin_char, room)
            end = _block_end(text, positions, ranked, starts, begin_char, begin_token, budget)
            while no_leading_space and end < len(text) and text[end] == " ":
                end += 1
            planned.append((begin_char, end))
            begin_char = end
        sizes = [len(ids) for ids in tokenize(tokenizer, [text[a:b] for a, b in planned])["input_ids"]]
        failed = next(
            (k for k, size in enumerate(sizes) if size > room and budgets.get(planned[k][0], room) > 1), None
        )
        if failed is None:
            return [text[a:b] for a, b in accepted + planned]
        accepted += planned[:failed]
        start = planned[failed][0]
        # tokenized alone it needs more than the text's own tokens: aim shorter and cut again
        budgets[start] = budgets.get(start, room) - (sizes[failed] - room)


def _block_end(
    text: str,
    positions: list[int],
    ranked: dict[int, int],
    starts: list[int],
    begin_char: int,
    begin_token: int,
    budget: int,
) -> int:
    """Where a block starting at ``begin_char`` (token ``begin_token``) ends, aiming at ``budget`` tokens."""
    budget = max(budget, 1)
    if begin_token + budget >= len(starts):
        return len(text)
    limit = max(starts[begin_token + budget], begin_char + 1)
    low = max(starts[begin_token + budget // 2], begin_char)
    candidates = positions[bisect_right(positions, low) : bisect_right(positions, limit)]
    if candidates:
        return min(candidates, key=lambda pos: (ranked[pos], -pos))
    # No welcome cut in the second half: between two tokens (a token start is a character's start).
    return limit


# Example column: which block of its text a row is (0 for a text that was not cut). The builder
# counts the texts cut from it; it never reaches the dataset.
BLOCK = "_block"


def drops_leading_space(tokenizer: Any) -> bool:
    """Whether the tokenizer gives a text with a leading space the tokens of the text without it
    (Llama and Code Llama: sentencepiece's dummy prefix), so that a block starting with a space
    would lose it."""
    spaced, bare = tokenize(tokenizer, [" x", "x"])["input_ids"]
    return list(spaced) == list(bare)


def split_long_texts(
    batch: Batch,
    columns: list[str],
    tokenizer: Any,
    max_length: int,
    boundaries: Callable[[int, str], dict[int, int]] | None = None,
) -> Batch:
    """Cut texts longer than ``max_length`` tokens (EOS included) into consecutive blocks
    (:func:`cut_blocks`, where ``boundaries(row, text)`` ranks the cuts, default line starts); joined
    back in order they give the text exactly. Other columns are repeated; :data:`BLOCK` is added."""
    out: Batch = {name: [] for name in [*columns, BLOCK]}
    room = max_length - 1
    # A token covers at least one byte (byte-level BPE, byte fallback), so a text of no more bytes
    # than ``room`` never needs splitting; the encode stage tokenizes every text anyway, so only
    # longer ones are tokenized here as well.
    long_rows = [row for row, text in enumerate(batch["text"]) if len(text.encode("utf-8")) > room]
    encoded = (
        tokenize(tokenizer, [batch["text"][row] for row in long_rows], offsets=True)["offset_mapping"]
        if long_rows
        else []
    )
    offsets_of = dict(zip(long_rows, encoded, strict=True))
    keep_token_spans([batch["text"][row] for row in long_rows], encoded)
    lossy = bool(long_rows) and drops_leading_space(tokenizer)
    for row, text in enumerate(batch["text"]):
        pieces = [text]
        if row in offsets_of:
            ranked = boundaries(row, text) if boundaries is not None else None
            pieces = cut_blocks(text, offsets_of[row], room, tokenizer, ranked, no_leading_space=lossy)
        pieces = [piece for piece in pieces if piece.strip()]
        for index, piece in enumerate(pieces):
            for name in columns:
                out[name].append(piece if name == "text" else batch[name][row])
            out[BLOCK].append(index if len(pieces) > 1 else 0)
    return out
