"""``crosscodeeval``: CrossCodeEval line completion without, and with, its cross-file context
(``crosscodeeval_context``: its retrieved chunks in the model's repository format); the report gives
the difference per model and metric."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from codetune.context import ContextOptions, RepoContext, Snippet, build_context
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ReferenceTask


def _crosscodeeval_snippets(example: Any) -> tuple[Snippet, ...]:
    """CrossCodeEval's retrieved chunks as context snippets (source "crosscodeeval"), best first."""
    return tuple(
        Snippet(path, text, "crosscodeeval", score) for path, text, score in example.crossfile_chunks
    )


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> list[ReferenceTask]:
    """Without, and with, its cross-file context (``context``: both, without, with)."""
    from codetune.evaluate.published import read_crosscodeeval

    if cfg.crosscodeeval is None:
        return []
    examples = read_crosscodeeval(cfg.crosscodeeval)[: cfg.limit]
    file = Path(cfg.crosscodeeval).name
    metrics = ["first_line_exact_match", "edit_sim", "identifier_em", "identifier_f1"]
    common = {"stop": ["\n"], "single_line": True, "fim_optional": True}
    tasks: list[ReferenceTask] = []
    if cfg.context != "with":
        items = [
            Item(e.prompt, e.groundtruth, suffix=e.right_context, meta={"task_id": e.task_id, "path": e.path})
            for e in examples
        ]
        description = f"CrossCodeEval line completion without context ({file})"
        tasks.append(ReferenceTask("crosscodeeval", items, description, metrics=metrics, **common))
    if cfg.context != "without":
        options = ContextOptions(budget_tokens=cfg.context_tokens)
        items = []
        for e in examples:
            snippets = _crosscodeeval_snippets(e)
            # a row with only the rendered text (no chunk list): the text goes before the prompt as it is
            prompt = e.prompt if snippets or not e.crossfile_context else e.crossfile_context + e.prompt
            meta = {"task_id": e.task_id, "path": e.path, "repository": e.repository}
            items.append(Item(prompt, e.groundtruth, suffix=e.right_context, meta=meta, snippets=snippets))

        def context(item: Item, count: Callable[[str], int]) -> RepoContext | None:
            path = item.meta.get("path") or ""
            found = build_context(
                None, path, item.prompt, item.suffix or "", count_tokens=count, options=options,
                client_snippets=item.snippets,
            )  # fmt: skip
            # the repository's name too, as serve --repo and build's repo_context give it to the model
            repository = item.meta.get("repository") or ""
            return RepoContext(tuple(found), path, repository) if found else None

        tasks.append(
            ReferenceTask(
                "crosscodeeval_context",
                items,
                f"CrossCodeEval line completion with its cross-file context, up to {cfg.context_tokens} tokens "
                f"in the model's repository format ({file})",
                metrics=metrics,
                context=context,
                baseline="crosscodeeval" if cfg.context == "both" else None,
                **common,
            )
        )
    return tasks
