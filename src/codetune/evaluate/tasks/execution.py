"""``execution``: pass@k on HumanEval/MultiPL-E problems, the completions run in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codetune.errors import ConfigError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, Task


@dataclass
class ExecutionTask(Task):
    problems: list[Any] = field(default_factory=list)  # passk.Problem, one per item

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from codetune.evaluate.passk import execute
        from codetune.evaluate.sandbox import eval_limits

        limits = eval_limits(cfg.exec_timeout, cfg.exec_memory_mb, cfg.exec_max_processes)
        result = execute(
            self.problems,
            generations,
            command=cfg.exec_command,
            extension=cfg.exec_extension,
            limits=limits,
            unsafe=[name for name in ("network", "mount", "pid") if getattr(cfg, f"unsafe_{name}")],
            ks=cfg.k,
        )
        return {k: round(v, 4) for k, v in result.items() if k.startswith("pass@")}, result["rows"]


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> ExecutionTask | None:
    """Refuses unless execution is allowed."""
    from codetune.evaluate.passk import read_problems

    if cfg.problems is None:
        return None
    if not cfg.allow_execution:
        raise ConfigError("pass@k runs generated code: pass --allow-execution (it runs in a sandbox)")
    problems = read_problems(cfg.problems)[: cfg.samples]
    items = [Item(p.prompt, meta={"problem": p.name}) for p in problems]
    stop = sorted({s for p in problems for s in p.stop})
    return ExecutionTask(
        "execution", items, f"pass@k on {cfg.problems.name}, n={cfg.n}", n=cfg.n, stop=stop, problems=problems
    )
