"""``codetune score``: CodeXGLUE-exact scores of a predictions file against a references file."""

from __future__ import annotations

import json
from pathlib import Path

from codetune.errors import InputError


def _read_lines(path: Path, what: str) -> list[str]:
    # Like CodeXGLUE's open(...).readlines(): universal newlines, one sample per line.
    if not Path(path).is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\n") for line in handle.readlines()]
    except UnicodeDecodeError as error:
        raise InputError(
            f"{what} file {path} is not UTF-8 text: {error.reason} at byte {error.start}"
        ) from None


def _read_gt(lines: list[str], path: Path) -> list[str]:
    out = []
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(
                f'{path}:{number}: codexglue-line references must be JSON lines {{"gt": ...}}'
            ) from None
        if not isinstance(item, dict) or not isinstance(item.get("gt"), str):
            raise InputError(f'{path}:{number}: expected an object with a string "gt" field')
        out.append(item["gt"])
    return out


def score_files(references: str | Path, predictions: str | Path, style: str = "codexglue-method") -> dict:
    """Score two line-aligned files; returns {"exact_match", "edit_sim", "bleu", "n"} (percentages)."""
    from codetune.evaluate.codexglue import STYLES

    if style not in STYLES:
        raise InputError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
    refs = _read_lines(Path(references), "references")
    preds = _read_lines(Path(predictions), "predictions")
    if style == "codexglue-line":
        refs = _read_gt(refs, Path(references))
    return STYLES[style](refs, preds)
