"""``editor``: editor replay. Cursors where an editor triggers completion in held-out files, requests
built as serve builds them (prefix and suffix windows), one at a time, with latency; with repository
context from the other files of the cursor's repository too (``editor_context``, as serve --repo
retrieves it)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset
from codetune.context import ContextOptions, RepoContext, RepoIndex, build_context
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Item, ReferenceTask, TaskResult

EDITOR_METRICS = [
    "first_line_exact_match",
    "edit_sim",
    "identifier_em",
    "identifier_f1",
    "accepted",
    "accepted_chars",
    "empty_rate",
]
CURSOR_KINDS = ("line_end", "mid_identifier", "block_empty_line", "after_bracket")


def cursor_positions(text: str) -> list[tuple[str, int, int]]:
    """Where an editor triggers completion in ``text``: (kind, cursor offset, end of the truth).

    line_end: the previous line is finished and Enter was pressed: the cursor is after the indentation
    of a non-blank line. mid_identifier: just after an identifier character, inside a line.
    block_empty_line: a line inside an indented block, blanked out to its indentation. after_bracket:
    just after an opening bracket. The truth is always the rest of the cursor's line.
    """
    positions: list[tuple[str, int, int]] = []
    offset = 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        start, end = offset, offset + len(line)
        offset = end + 1
        code = line.strip()
        if number == 0 or not code:
            continue
        indent = start + len(line) - len(line.lstrip())
        kind = "block_empty_line" if indent > start and lines[number - 1].strip() else "line_end"
        positions.append((kind, indent, end))
        for at in range(indent + 1, end):
            before, after = text[at - 1], text[at]
            if (before.isalnum() or before == "_") and (after.isalnum() or after == "_"):
                positions.append(("mid_identifier", at, end))
            elif before in "([{" and text[at:end].strip():
                positions.append(("after_bracket", at, end))
    return positions


@dataclass
class EditorTask(ReferenceTask):
    """Reference metrics, plus p50/p95 latency and acceptance per cursor kind."""

    def evaluate(self, run: Any, **sampling: Any) -> TaskResult:
        result = super().evaluate(run, **sampling)
        if result.latencies:
            result.scores |= latency_scores(result.latencies) | per_kind_scores(self, result.generations)
            for row, seconds in zip(result.rows, result.latencies):
                row["latency_ms"] = round(1000 * seconds, 1)
        return result


def latency_scores(latencies: list[float]) -> dict[str, float]:
    """p50 and p95 request latency in milliseconds (nearest-rank)."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return round(1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)

    return {"latency_p50_ms": rank(0.5), "latency_p95_ms": rank(0.95)}


def per_kind_scores(task: ReferenceTask, generations: list[list[str]]) -> dict[str, float]:
    """Acceptance and first-line exact match per cursor kind."""
    from codetune.evaluate.metrics import accepted, first_line_exact_match

    out: dict[str, float] = {}
    kinds = sorted({item.meta.get("kind") for item in task.items if item.meta.get("kind")})
    for kind in kinds:
        pairs = [
            (g[0] if g else "", i.reference or "")
            for i, g in zip(task.items, generations)
            if i.meta.get("kind") == kind
        ]
        preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
        out[f"{kind}_accepted"] = accepted(preds, refs)
        out[f"{kind}_first_line_exact_match"] = first_line_exact_match(preds, refs)
    return out


def build(
    cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]
) -> list[EditorTask] | EditorTask | None:
    texts = [(r.get("path"), r["text"]) for r in rows if isinstance(r.get("text"), str)]
    if not texts:
        return None
    rows_by_path = {r.get("path"): r for r in rows if isinstance(r.get("text"), str)}
    rng = random.Random(cfg.seed + 2)
    by_kind: dict[str, list[tuple[int, int, int]]] = {kind: [] for kind in CURSOR_KINDS}
    for index, (_, text) in enumerate(texts):
        for kind, at, end in cursor_positions(text):
            by_kind[kind].append((index, at, end))
    # the same number of cursors of each kind (as far as the files have them)
    per_kind = max(1, cfg.samples // len(CURSOR_KINDS))
    items: list[Item] = []
    for kind in CURSOR_KINDS:
        for index, at, end in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind]))):
            path, text = texts[index]
            items.append(
                Item(
                    text[:at],
                    text[at:end],
                    suffix=text[end:],
                    meta={"kind": kind, "path": path, "line": text.count("\n", 0, at) + 1},
                )
            )
    if not items:
        return None
    for item, row in zip(items, (rows_by_path.get(i.meta["path"]) for i in items)):
        item.meta["repo"] = str((row or {}).get("repo") or "")
    plain = EditorTask(
        "editor",
        items,
        f"editor replay: {len(items)} cursors in held-out files ({', '.join(CURSOR_KINDS)}), one request "
        "at a time, prefix and suffix as serve sends them",
        stop=["\n"],
        single_line=True,
        timed=True,
        fim_optional=True,
        metrics=list(EDITOR_METRICS),
    )
    indexes = _repository_indexes(cfg, rows) if cfg.context != "without" else {}
    if not any(i.meta["repo"] in indexes and len(indexes[i.meta["repo"]].files) > 1 for i in items):
        return plain  # no cursor's repository has another file: a context run would repeat this one
    options = ContextOptions(budget_tokens=cfg.context_tokens)

    def context(item: Item, count: Callable[[str], int]) -> RepoContext | None:
        index = indexes.get(item.meta["repo"])
        path = item.meta["path"] or ""
        found = build_context(
            index, path, item.prompt, item.suffix or "", count_tokens=count, options=options
        )
        return RepoContext(tuple(found), path, item.meta["repo"]) if found else None

    with_context = replace(
        plain,
        name="editor_context",
        description=plain.description + f"; with up to {cfg.context_tokens} tokens of context from the other "
        "files of the cursor's repository (as serve --repo retrieves it)",
        context=context,
        baseline="editor",
    )
    return [plain, with_context] if cfg.context == "both" else [with_context]


def _repository_indexes(cfg: EvalConfig, test_rows: list[dict[str, Any]]) -> dict[str, RepoIndex]:
    """One index per repository over every split's files (what serve --repo indexes): the target file is
    left out per cursor. A file cut into pieces at build is joined again; the test split's copy wins."""
    files: dict[tuple[str, str], list[str]] = {}
    splits: list[list[dict[str, Any]]] = []
    if cfg.dataset is not None and Path(cfg.dataset).is_dir():
        data = read_dataset(cfg.dataset).splits
        for name in data:
            if name != "test" and {"path", "text"} <= set(data[name].column_names):
                columns = [c for c in ("path", "repo", "text") if c in data[name].column_names]
                splits.append(data[name].select_columns(columns).to_list())
    splits.append(test_rows)
    for rows in splits:
        seen: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            if isinstance(row.get("text"), str) and row.get("path"):
                seen.setdefault((str(row.get("repo") or ""), row["path"]), []).append(row["text"])
        files.update(seen)
    by_repo: dict[str, dict[str, str]] = {}
    for (repo, path), pieces in files.items():
        by_repo.setdefault(repo, {})[path] = "".join(pieces)
    return {repo: RepoIndex(repo, texts) for repo, texts in by_repo.items()}
