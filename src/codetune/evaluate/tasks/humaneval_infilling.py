"""``humaneval-infilling``: HumanEval infilling (single-line by default, bundled; any file of its shape with
``problems``), scored by its own harness on what the editor would insert; ``codetune score --style
humaneval-infilling`` scores a samples file the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codetune.errors import ConfigError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ScoreFiles, Task


@dataclass
class InfillingTask(Task):
    problems: list[Any] = field(default_factory=list)  # infilling.InfillingProblem, one per item

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The official harness on what the editor would insert; plus syntax validity of the filled file."""
        from codetune.evaluate.infilling import score
        from codetune.evaluate.syntax import is_valid

        # A single-line hole is a whole line: the editor inserts the line and its newline.
        def inserted(text: str) -> str:
            return text if not self.single_line or text.endswith("\n") else text + "\n"

        samples = {p.task_id: [inserted(g) for g in gens] for p, gens in zip(self.problems, generations)}
        result = score(self.problems, samples, unsafe_network=cfg.unsafe_network, ks=cfg.k)
        valid = [
            is_valid("python", problem.prompt + completion + problem.suffix)
            for problem in self.problems
            for completion in samples[problem.task_id]
        ]
        scores = {k: round(v, 2) for k, v in result.items() if k.startswith("pass@")}
        scores["exact_match"] = round(result["exact_match"], 2)
        scores["syntax_valid"] = round(100 * sum(valid) / max(1, len(valid)), 2)
        rows = [
            {**row, "completion": samples[row["task_id"]][0], "reference": problem.canonical_solution}
            for row, problem in zip(result["rows"], self.problems)
        ]
        return scores, rows


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> InfillingTask:
    from codetune.evaluate.infilling import read_problems

    if not cfg.allow_execution:
        raise ConfigError(
            "humaneval-infilling runs generated code: pass --allow-execution (it runs in a sandbox)"
        )
    problems = read_problems(cfg.problems)[: cfg.limit]
    single = all(
        p.canonical_solution.count("\n") == 1 and p.canonical_solution.endswith("\n") for p in problems
    )
    items = [
        Item(p.prompt, p.canonical_solution, suffix=p.suffix, meta={"task_id": p.task_id}) for p in problems
    ]
    return InfillingTask(
        "humaneval-infilling",
        items,
        f"HumanEval {'single-line ' if single else ''}infilling, {len(problems)} problems, n={cfg.n}",
        n=cfg.n,
        single_line=single,
        problems=problems,
    )


def score_style(style: str, files: ScoreFiles) -> dict[str, Any]:
    """``codetune score --style humaneval-infilling``: pass@1 (pass@10 when n >= 10), exact match, n."""
    from codetune.evaluate.infilling import score_files

    return score_files(
        files.predictions,
        files.problems,
        allow_execution=files.allow_execution,
        unsafe_network=files.unsafe_network,
    )
