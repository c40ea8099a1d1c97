"""Reading build inputs: a corpus folder (Parquet shards) or JSON/JSONL record files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codetune.artifacts.corpus import read_corpus
from codetune.errors import InputError
from codetune.languages import language_for_path


def read_corpus_docs(folder: Path) -> list[dict[str, Any]]:
    """Documents (text, path, repo, language; changed, when the corpus says when each file last
    changed) of a corpus folder, in shard order."""
    docs = [
        {
            "text": row["content"] or "",
            "path": row["path"],
            "repo": row.get("repo") or "",
            "language": row.get("language") or "",
            **({"changed": row["changed"]} if row.get("changed") is not None else {}),
        }
        for row in read_corpus(folder)
    ]
    if not docs:
        raise InputError(f"corpus {folder} is empty (0 files)")
    for doc in docs:
        if not doc["language"]:
            found = language_for_path(doc["path"] or "")
            doc["language"] = found.name if found else ""
    return docs


def record_files(path: Path) -> list[Path]:
    """JSON/JSONL files given as a file or a folder."""
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json"))
    if not files:
        raise InputError(f"no .json or .jsonl files in {path}")
    return files


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of JSONL (one object per line) or JSON (a list of objects) files, each with ``_where``."""
    records: list[dict[str, Any]] = []
    for file in record_files(Path(path)):
        text = file.read_text(encoding="utf-8", errors="replace")
        stripped = text.lstrip()
        if stripped.startswith("[") or (
            file.suffix == ".json" and stripped.startswith("{") and "\n{" not in text
        ):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"{file} is not valid JSON: {error}") from None
            items = data if isinstance(data, list) else [data]
            lines = list(enumerate(items, 1))
        else:
            lines = []
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    lines.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise InputError(f"{file}:{number} is not valid JSON: {error.msg}") from None
        for number, item in lines:
            if not isinstance(item, dict):
                raise InputError(f"{file}:{number}: expected a JSON object, got {type(item).__name__}")
            records.append({**item, "_where": f"{file.name}:{number}"})
    if not records:
        raise InputError(f"no records in {path}")
    return records


def input_fingerprint(path: Path) -> Any:
    """What identifies an input for the manifest: its manifest fingerprint, else names, sizes, mtimes."""
    from codetune.artifacts.manifest import manifest_fingerprint

    path = Path(path)
    found = manifest_fingerprint(path) if path.is_dir() else None
    if found:
        return found
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
