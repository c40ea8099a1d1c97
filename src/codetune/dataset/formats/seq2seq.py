"""``seq2seq``: source -> target pairs for encoder-decoder models (the CoNaLa use case)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.dataset.formats.base import Batch, Format
from codetune.dataset.inputs import read_records
from codetune.errors import InputError


class Seq2Seq(Format):
    """Source/target pairs for encoder-decoder models, e.g. CoNaLa ``intent + "\\n" + snippet -> rewritten``."""

    name = "seq2seq"
    kind = "seq2seq"
    repo_context = False

    def load(self, path: Path) -> list[dict[str, Any]]:
        opts = self.cfg.seq2seq
        docs, skipped = [], 0
        for record in read_records(path):
            missing = [f for f in (*opts.source_fields, opts.target_field) if f not in record]
            if missing:
                raise InputError(
                    f"{record['_where']}: no field(s) {', '.join(map(repr, missing))}; set "
                    "seq2seq.source_fields / seq2seq.target_field"
                )
            target = record[opts.target_field]
            if not isinstance(target, str) or not target.strip():
                skipped += 1  # CoNaLa has rows without a rewritten intent
                continue
            source = opts.separator.join(str(record[f] or "") for f in opts.source_fields)
            docs.append(
                {
                    "text": source,
                    "source": source,
                    "target": target,
                    "path": record["_where"],
                    "repo": record["_where"].rsplit(":", 1)[0],
                    "language": "",
                }
            )
        if not docs:
            raise InputError(f"no source/target pairs in {path} ({skipped} records without a target)")
        self.dropped["no_target"] += skipped
        return docs

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        return {name: batch[name] for name in self.columns()}
