"""``completion``: held-out completion, line completion at random cut points of whole files, else the
test split's own prompt/completion (or source/target) pairs, scored against their references."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from codetune.errors import InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ReferenceTask


@dataclass
class CompletionTask(ReferenceTask):
    sweep_rank: int | None = 1  # the sweep's task when there is no prompt file

    @property
    def prefix(self) -> str:
        return ""  # the headline task: its scores carry no prefix


def _cut_points(text: str) -> list[int]:
    lines = text.split("\n")
    return [i for i in range(1, len(lines)) if lines[i].strip()]


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> CompletionTask | None:
    if not rows:
        return None
    rng = random.Random(cfg.seed)
    first = rows[0]
    if "prompt" in first and "completion" in first:
        picked = rng.sample(rows, min(cfg.samples, len(rows)))
        items = [Item(r["prompt"], r["completion"], meta={"path": r.get("path")}) for r in picked]
        description = f"{stats.get('format', 'prompt/completion')} completions of the test split"
        return CompletionTask("completion", items, description, metrics=list(cfg.metrics))
    if "source" in first and "target" in first:
        picked = rng.sample(rows, min(cfg.samples, len(rows)))
        items = [Item(r["source"], r["target"], meta={"path": r.get("path")}) for r in picked]
        return CompletionTask(
            "completion", items, "seq2seq targets of the test split", metrics=list(cfg.metrics)
        )
    if "text" not in first:
        raise InputError("the test split has neither text, prompt/completion nor source/target columns")
    # Line completion: every prompt is a file up to a random line; the reference is that whole line.
    # Cut points are drawn without replacement from every non-blank line (but the first) of every file.
    # With ``line_cut=mid``, the prompt also holds the line's indentation and a random part of its
    # text (at least one character is left to complete): what an editor asks for mid-typing.
    candidates = [(index, cut) for index, row in enumerate(rows) for cut in _cut_points(row["text"])]
    items: list[Item] = []
    for index, cut in sorted(rng.sample(candidates, min(cfg.samples, len(candidates)))):
        lines = rows[index]["text"].split("\n")
        prompt, reference = "\n".join(lines[:cut]) + "\n", lines[cut]
        if cfg.line_cut == "mid":
            line = lines[cut]
            start = len(line) - len(line.lstrip())
            at = rng.randrange(start, len(line.rstrip()))
            prompt, reference = prompt + line[:at], line[at:]
        items.append(Item(prompt, reference, meta={"path": rows[index].get("path"), "line": cut + 1}))
    if not items:
        return None
    where = "inside lines" if cfg.line_cut == "mid" else "at line starts"
    return CompletionTask(
        "completion",
        items,
        f"line completion at random cut points {where} of held-out files",
        stop=["\n"],
        single_line=True,
        metrics=list(cfg.metrics),
    )
