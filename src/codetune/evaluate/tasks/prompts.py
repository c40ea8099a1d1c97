"""``prompts``: a prompt file, N generations each, scored by syntax validity per prompt (the Elm use case)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, Task


@dataclass
class SyntaxTask(Task):
    """Scored by whether prompt + completion parses, per prompt (plain, and cut to the last complete node)."""

    sweep_rank: int | None = 0  # the sampling sweep runs on the prompt file first
    needs_language: str | None = (
        "syntax validity of a prompt file needs a language: pass --language (e.g. elm)"
    )

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from codetune.evaluate.syntax import syntax_validity

        if language is None:
            raise ConfigError("syntax validity needs a language: pass --language (e.g. elm)")
        prompts = [i.prompt for i in self.items]
        plain = syntax_validity(language, prompts, generations)
        cut = syntax_validity(language, prompts, generations, truncate=True)
        rows = [
            {
                **row,
                "prompt_text": item.prompt[-200:],
                "truncated_rate": row_cut["rate"],
                "sample": generations[row["prompt"]][0] if generations[row["prompt"]] else "",
            }
            for row, row_cut, item in zip(plain["rows"], cut["rows"], self.items)
        ]
        scores = {
            "syntax_valid": round(plain["rate"], 4),
            "syntax_valid_truncated": round(cut["rate"], 4),
            "generations": plain["n"],
        }
        return scores, rows


def read_prompt_file(path: Path) -> list[str]:
    """Prompts from a JSON list or JSONL of {"prompt": ...} objects (or plain strings)."""
    if not Path(path).is_file():
        raise InputError(f"prompt file not found: {path}")
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON or JSONL: {error.msg} (line {error.lineno})") from None
    prompts = []
    for i, entry in enumerate(data):
        value = entry.get("prompt") if isinstance(entry, dict) else entry
        if not isinstance(value, str):
            raise InputError(f'{path}: entry {i} is not {{"prompt": "..."}}')
        prompts.append(value)
    if not prompts:
        raise InputError(f"{path}: no prompts")
    return prompts


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> SyntaxTask | None:
    if cfg.prompts is None:
        return None
    items = [Item(p) for p in read_prompt_file(cfg.prompts)]
    return SyntaxTask(
        "prompts", items, f"prompt file {cfg.prompts.name}, n={cfg.n} generations per prompt", n=cfg.n
    )
