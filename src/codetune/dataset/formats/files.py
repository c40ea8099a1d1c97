"""``files``: whole files, long ones cut into consecutive blocks (packed at train time)."""

from __future__ import annotations

from typing import Any

from codetune.dataset.blocks import split_long_texts
from codetune.dataset.formats.base import Batch, Format


class Files(Format):
    """Whole files: ``text`` is the file, or blocks of it with ``overlong=split``."""

    name = "files"
    reserves = ("fim", "context")

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        keep = [i for i, text in enumerate(batch["text"]) if text.strip()]
        rows = {name: [batch[name][i] for i in keep] for name in self.columns()}
        if self.cfg.overlong == "split" and tokenizer is not None and rows["text"]:
            return split_long_texts(rows, self.columns(), tokenizer, self.room)
        return rows
