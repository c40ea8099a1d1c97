"""``benchmark``: an external CodeXGLUE file, method generation (signature/docstring -> body) or line
completion, scored exactly as CodeXGLUE's evaluators score it; ``codetune score --style codexglue-method``
and ``codexglue-line`` score a predictions file against a references file the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from codetune.errors import InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ReferenceTask, ScoreFiles

_LAYOUT = re.compile(r"\s*<(EOL|INDENT|DEDENT)>\s*")


def decode_codexglue(code: str) -> str:
    """CodeXGLUE token text -> source: <s></s> dropped, <EOL>/<INDENT>/<DEDENT> to real layout, literals filled."""
    from codetune.evaluate.codexglue import post_process_line

    code = post_process_line(code.replace("<s>", "").replace("</s>", "")).strip()
    out, depth, line = [], 0, []
    for part in _LAYOUT.split(code):
        if part == "EOL":
            out.append("    " * depth + " ".join(line).strip())
            line = []
        elif part == "INDENT":
            depth += 1
        elif part == "DEDENT":
            depth = max(depth - 1, 0)
        elif part:
            line.append(part)
    if line:
        out.append("    " * depth + " ".join(line).strip())
    return "\n".join(out)


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> ReferenceTask | None:
    if cfg.benchmark is None:
        return None
    path = Path(cfg.benchmark)
    if not path.is_file():
        raise InputError(f"benchmark file not found: {path}")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise InputError(f"{path}:{number}: not a JSON line") from None
    if not entries:
        raise InputError(f"{path}: no entries")
    style = cfg.benchmark_style or ("codexglue-line" if "gt" in entries[0] else "codexglue-method")
    items = []
    for number, entry in enumerate(entries[: cfg.samples], 1):
        if style == "codexglue-line":
            if "input" not in entry or "gt" not in entry:
                raise InputError(f'{path}:{number}: line-completion entries need "input" and "gt"')
            prompt = decode_codexglue(entry["input"])
            items.append(Item(prompt + (" " if prompt and not prompt.endswith("\n") else ""), entry["gt"]))
        else:
            if "body" not in entry or "signature" not in entry:
                raise InputError(f'{path}:{number}: method-generation entries need "signature" and "body"')
            doc = entry.get("docstring") or ""
            prompt = decode_codexglue(entry["signature"]) + "\n"
            if doc:
                prompt += f'    """{decode_codexglue(doc)}"""\n'
            items.append(Item(prompt, entry["body"]))
    if style == "codexglue-line":
        return ReferenceTask(
            "benchmark",
            items,
            f"CodeXGLUE line completion ({path.name})",
            stop=["\n"],
            single_line=True,
            style=style,
        )
    return ReferenceTask(
        "benchmark",
        items,
        f"CodeXGLUE method generation ({path.name})",
        style=style,
        stop=["\ndef ", "\nclass ", "\nif __name__", "\n\n\n"],
    )


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


def score_style(style: str, files: ScoreFiles) -> dict[str, Any]:
    """``codetune score --style codexglue-method|codexglue-line``."""
    if files.references is None:
        raise InputError(f"--style {style} needs --references")
    return score_files(files.references, files.predictions, style=style)
