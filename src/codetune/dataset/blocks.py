"""Cutting a text longer than a row into consecutive blocks that join back to it exactly."""

from __future__ import annotations

from typing import Any

from codetune.dataset.formats.base import Batch, tokenize


def split_long_texts(batch: Batch, columns: list[str], tokenizer: Any, max_length: int) -> Batch:
    """Cut texts longer than ``max_length`` tokens (EOS included) into consecutive blocks.

    Blocks end at a line end when one falls in the block's second half, so no line is torn apart
    without need; joined back in order they give the text exactly. Other columns are repeated.
    """
    out: Batch = {name: [] for name in columns}
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
    for row, text in enumerate(batch["text"]):
        offsets = offsets_of.get(row, ())
        if len(offsets) <= room:
            pieces = [text]
        else:
            pieces, start_token, start_char = [], 0, 0
            while start_token < len(offsets):
                end_token = min(start_token + room, len(offsets))
                if end_token < len(offsets):
                    for cut in range(end_token, start_token + room // 2, -1):
                        if text[offsets[cut - 1][1] - 1 : offsets[cut - 1][1]] == "\n":
                            end_token = cut
                            break
                end_char = offsets[end_token][0] if end_token < len(offsets) else len(text)
                pieces.append(text[start_char:end_char])
                start_token, start_char = end_token, end_char
        for piece in pieces:
            if not piece.strip():
                continue
            for name in columns:
                out[name].append(piece if name == "text" else batch[name][row])
    return out
