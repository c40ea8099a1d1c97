"""``code_json``: JSONL ``{"code": ...}`` records (PaddleNLP CodeGen's fine-tuning input), one text each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.artifacts.corpus import is_corpus
from codetune.dataset.formats.files import Files
from codetune.dataset.inputs import read_corpus_docs, read_records
from codetune.errors import InputError


class CodeJson(Files):
    """One text per record (or per corpus file), long ones cut into blocks as ``files`` cuts them."""

    name = "code_json"

    def load(self, path: Path) -> list[dict[str, Any]]:
        if is_corpus(path):
            return read_corpus_docs(path)
        field = self.cfg.code_json.field
        docs = []
        for record in read_records(path):
            if field not in record:
                raise InputError(f"{record['_where']}: no {field!r} field; set code_json.field")
            code = record[field]
            if isinstance(code, str) and code.strip():
                docs.append(
                    {
                        "text": code,
                        "path": record["_where"],
                        "repo": record["_where"].rsplit(":", 1)[0],
                        "language": record.get("language") or "",
                    }
                )
        if not docs:
            raise InputError(f"no non-empty {field!r} records in {path}")
        return docs
