"""``units``: tree-sitter syntax units (functions, classes, types) with their doc (the Elm use case)."""

from __future__ import annotations

from typing import Any

from codetune.dataset.blocks import split_long_texts
from codetune.dataset.config import BuildConfig
from codetune.dataset.formats.base import Batch, Format, empty, origin
from codetune.errors import InputError


class Units(Format):
    """Tree-sitter syntax units with their doc comment, as text or as header -> body pairs.

    With ``overlong: split`` a text unit longer than a row is cut into consecutive blocks where its
    members or statements begin, leaving room for FIM sentinels and context like ``files`` blocks.
    """

    name = "units"
    reserves = ("fim", "context")
    warn_split = True

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__(cfg)
        self.prompted = cfg.units.mode == "prompt"

    def check(self, docs: list[dict[str, Any]]) -> None:
        from codetune.dataset.syntax import grammar_language

        languages = sorted({doc.get("language") or "" for doc in docs})
        if "" in languages:
            raise InputError("units needs each file's language, but the corpus has files without one")
        for name in languages:
            grammar_language(name)

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        from codetune.dataset.syntax import inner_boundaries, syntax_units

        opts = self.cfg.units
        out = empty(self.columns())
        for i, text in enumerate(batch["text"]):
            units = syntax_units(
                text,
                batch["language"][i],
                types=opts.types,
                doc=opts.doc,
                drop_comments=opts.drop_comments,
                drop_imports=opts.drop_imports,
                nested=opts.nested,
                path=batch["path"][i],
            )
            for unit in units:
                if len(unit.text.strip()) < opts.min_chars:
                    continue
                if self.prompted:
                    if not unit.completion.strip() or not unit.prompt.strip():
                        continue
                    out["prompt"].append(unit.prompt)
                    out["completion"].append(unit.completion)
                out["text"].append(unit.text)
                origin(out, batch, i)
        if self.prompted or self.cfg.overlong != "split" or tokenizer is None or not out["text"]:
            return out  # a header -> body pair over the limit is trimmed by the encoder (and counted)
        # A unit over the limit is cut where its members or statements begin (blocks.cut_blocks).
        return split_long_texts(
            out,
            self.columns(),
            tokenizer,
            self.room,
            boundaries=lambda row, text: inner_boundaries(text, out["language"][row], out["path"][row]),
        )
