"""``safim``: SAFIM (block, control-flow or API split), fill-in-the-middle on its holes, scored by its
protocol (execution where the problem has tests, else syntax match)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, Task


@dataclass
class SafimTask(Task):
    problems: list[Any] = field(default_factory=list)  # published.SafimProblem, one per item

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from codetune.evaluate.published import safim_score

        result = safim_score(
            self.problems,
            [g[0] if g else "" for g in generations],
            allow_execution=cfg.allow_execution,
            unsafe_network=cfg.unsafe_network,
        )
        return {"pass@1": result["pass@1"], "not_executed": result["not_executed"]}, result["rows"]


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> SafimTask | None:
    from codetune.evaluate.published import read_safim

    if cfg.safim is None:
        return None
    problems = read_safim(cfg.safim)[: cfg.limit]
    items = [Item(p.prefix, p.ground_truth, suffix=p.suffix, meta={"task_id": p.task_id}) for p in problems]
    description = f"SAFIM {problems[0].split} completion ({Path(cfg.safim).name})"
    return SafimTask("safim", items, description, problems=problems)
