"""``fim``: single-line fill-in-the-middle on held-out files (SantaCoder style exact match)."""

from __future__ import annotations

import random
from typing import Any

from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ReferenceTask


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> ReferenceTask | None:
    texts = [r["text"] for r in rows if isinstance(r.get("text"), str)]
    if not texts:
        return None
    rng = random.Random(cfg.seed + 1)
    items: list[Item] = []
    for _ in range(cfg.samples * 3):
        if len(items) >= cfg.samples:
            break
        text = rng.choice(texts)
        lines = text.split("\n")
        inner = [i for i in range(1, len(lines) - 1) if lines[i].strip()]
        if not inner:
            continue
        i = rng.choice(inner)
        items.append(
            Item(
                "\n".join(lines[:i]) + "\n",
                lines[i],
                suffix="\n" + "\n".join(lines[i + 1 :]),
                meta={"line": i + 1},
            )
        )
    if not items:
        return None
    return ReferenceTask(
        "fim",
        items,
        "single-line infilling of held-out files",
        stop=["\n"],
        single_line=True,
        metrics=["fim_exact_match", "edit_sim"],
    )
