"""Evaluation tasks: what to prompt with and what to compare against. One registry, one function each.

A task builder gets the config and the held-out rows and returns a ``Task`` (or None when it has
no inputs, e.g. no prompt file given). Generation and scoring happen in the runner.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from codetune.context import ContextOptions, RepoContext, RepoIndex, Snippet, build_context
from codetune.errors import ConfigError, InputError
from codetune.evaluate.config import EvalConfig


@dataclass
class Item:
    """One prompt: its text (or FIM prefix/suffix), the reference when there is one, and where it came from."""

    prompt: str
    reference: str | None = None
    suffix: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Context snippets the benchmark brings (CrossCodeEval's retrieved chunks), for the context run.
    snippets: tuple[Any, ...] = ()


@dataclass
class Task:
    """A set of prompts with how to generate for them and how to score the results."""

    name: str
    items: list[Item]
    description: str
    metrics: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    single_line: bool = False
    n: int = 1
    style: str | None = None  # a CodeXGLUE scorer for benchmark files
    syntax: bool = False  # score syntax validity (per prompt) instead of references
    execution: Any = None  # problems for pass@k
    infilling: Any = None  # HumanEval infilling problems, scored by their own harness
    timed: bool = False  # one request at a time, as an editor sends them, with latency per request
    fim_optional: bool = False  # models without FIM tokens get the prefix alone, as serve answers them
    safim: Any = None  # SAFIM problems, scored by SAFIM's protocol
    # Repository context per item, given the model's token counter: a RepoContext or None.
    context: Callable[[Item, Callable[[str], int]], Any] | None = None
    baseline: str | None = None  # the task this one repeats with context (the report gives the delta)


TaskBuilder = Callable[[EvalConfig, list[dict[str, Any]], dict[str, Any]], "Task | list[Task] | None"]
TASKS: dict[str, TaskBuilder] = {}
GENERATION_TASKS = ("completion", "fim", "prompts", "benchmark", "execution", "humaneval-infilling")


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator: add a task builder ``(cfg, test_rows, stats) -> Task | None``."""

    def add(fn: TaskBuilder) -> TaskBuilder:
        TASKS[name] = fn
        return fn

    return add


def _cut_points(text: str) -> list[int]:
    lines = text.split("\n")
    return [i for i in range(1, len(lines)) if lines[i].strip()]


@register_task("completion")
def completion(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """Held-out completion: line completion at random cut points of whole files, else the rows' own pairs."""
    if not rows:
        return None
    rng = random.Random(cfg.seed)
    first = rows[0]
    if "prompt" in first and "completion" in first:
        picked = rng.sample(rows, min(cfg.samples, len(rows)))
        items = [Item(r["prompt"], r["completion"], meta={"path": r.get("path")}) for r in picked]
        return Task(
            "completion",
            items,
            f"{stats.get('format', 'prompt/completion')} completions of the test split",
            list(cfg.metrics),
        )
    if "source" in first and "target" in first:
        picked = rng.sample(rows, min(cfg.samples, len(rows)))
        items = [Item(r["source"], r["target"], meta={"path": r.get("path")}) for r in picked]
        return Task("completion", items, "seq2seq targets of the test split", list(cfg.metrics))
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
    return Task(
        "completion",
        items,
        f"line completion at random cut points {where} of held-out files",
        list(cfg.metrics),
        stop=["\n"],
        single_line=True,
    )


@register_task("fim")
def fim(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """Single-line fill-in-the-middle on held-out files (SantaCoder style exact match)."""
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
    return Task(
        "fim",
        items,
        "single-line infilling of held-out files",
        ["fim_exact_match", "edit_sim"],
        stop=["\n"],
        single_line=True,
    )


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


@register_task("prompts")
def prompts(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """A prompt file, N generations each, scored by syntax validity per prompt (the Elm use case)."""
    if cfg.prompts is None:
        return None
    items = [Item(p) for p in read_prompt_file(cfg.prompts)]
    return Task(
        "prompts",
        items,
        f"prompt file {cfg.prompts.name}, n={cfg.n} generations per prompt",
        n=cfg.n,
        syntax=True,
    )


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


@register_task("benchmark")
def benchmark(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """An external CodeXGLUE file: method generation (signature/docstring -> body) or line completion."""
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
        return Task(
            "benchmark",
            items,
            f"CodeXGLUE line completion ({path.name})",
            style=style,
            stop=["\n"],
            single_line=True,
        )
    return Task(
        "benchmark",
        items,
        f"CodeXGLUE method generation ({path.name})",
        style=style,
        stop=["\ndef ", "\nclass ", "\nif __name__", "\n\n\n"],
    )


@register_task("execution")
def execution(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """pass@k on HumanEval/MultiPL-E problems; refuses unless execution is allowed."""
    from codetune.evaluate.passk import read_problems

    if cfg.problems is None:
        return None
    if not cfg.allow_execution:
        raise ConfigError("pass@k runs generated code: pass --allow-execution (it runs in a sandbox)")
    problems = read_problems(cfg.problems)[: cfg.samples]
    items = [Item(p.prompt, meta={"problem": p.name}) for p in problems]
    stop = sorted({s for p in problems for s in p.stop})
    return Task(
        "execution",
        items,
        f"pass@k on {cfg.problems.name}, n={cfg.n}",
        n=cfg.n,
        stop=stop,
        execution=problems,
    )


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


@register_task("editor")
def editor(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """Editor replay: cursors where an editor triggers completion in held-out files, requests built
    as serve builds them (prefix and suffix windows), one at a time, with latency."""
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
    plain = Task(
        "editor",
        items,
        f"editor replay: {len(items)} cursors in held-out files ({', '.join(CURSOR_KINDS)}), one request "
        "at a time, prefix and suffix as serve sends them",
        list(EDITOR_METRICS),
        stop=["\n"],
        single_line=True,
        timed=True,
        fim_optional=True,
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
        from datasets import load_from_disk

        data = load_from_disk(str(cfg.dataset))
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


@register_task("humaneval-infilling")
def humaneval_infilling(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """HumanEval infilling (single-line by default, bundled; any file of its shape with --problems)."""
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
    return Task(
        "humaneval-infilling",
        items,
        f"HumanEval {'single-line ' if single else ''}infilling, {len(problems)} problems, n={cfg.n}",
        n=cfg.n,
        single_line=single,
        infilling=problems,
    )


@register_task("safim")
def safim(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """SAFIM (block, control-flow or API split): FIM on its holes, scored by its protocol."""
    from codetune.evaluate.published import read_safim

    if cfg.safim is None:
        return None
    problems = read_safim(cfg.safim)[: cfg.limit]
    items = [Item(p.prefix, p.ground_truth, suffix=p.suffix, meta={"task_id": p.task_id}) for p in problems]
    return Task(
        "safim", items, f"SAFIM {problems[0].split} completion ({Path(cfg.safim).name})", safim=problems
    )


def _crosscodeeval_snippets(example: Any) -> tuple[Snippet, ...]:
    """CrossCodeEval's retrieved chunks as context snippets (source "crosscodeeval"), best first."""
    return tuple(
        Snippet(path, text, "crosscodeeval", score) for path, text, score in example.crossfile_chunks
    )


def _crosscodeeval(cfg: EvalConfig) -> list[Task]:
    from codetune.evaluate.published import read_crosscodeeval

    if cfg.crosscodeeval is None:
        return []
    examples = read_crosscodeeval(cfg.crosscodeeval)[: cfg.limit]
    file = Path(cfg.crosscodeeval).name
    metrics = ["first_line_exact_match", "edit_sim", "identifier_em", "identifier_f1"]
    common = {"stop": ["\n"], "single_line": True, "fim_optional": True}
    tasks = []
    if cfg.context != "with":
        items = [
            Item(e.prompt, e.groundtruth, suffix=e.right_context, meta={"task_id": e.task_id, "path": e.path})
            for e in examples
        ]
        tasks.append(
            Task(
                "crosscodeeval",
                items,
                f"CrossCodeEval line completion without context ({file})",
                metrics,
                **common,
            )
        )
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
            Task(
                "crosscodeeval_context",
                items,
                f"CrossCodeEval line completion with its cross-file context, up to {cfg.context_tokens} tokens "
                f"in the model's repository format ({file})",
                metrics,
                context=context,
                baseline="crosscodeeval" if cfg.context == "both" else None,
                **common,
            )
        )
    return tasks


@register_task("crosscodeeval")
def crosscodeeval(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> list[Task]:
    """CrossCodeEval without, and with, its cross-file context (``context``: both, without, with)."""
    return _crosscodeeval(cfg)


def build_tasks(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> list[Task]:
    """Every requested generation task that has inputs."""
    unknown = [t for t in cfg.tasks if t not in TASKS and t not in ("loss", "crosscodeeval_context")]
    if unknown:
        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; known: loss, {', '.join(TASKS)}")
    wanted = list(cfg.tasks)
    wanted = ["crosscodeeval" if name == "crosscodeeval_context" else name for name in wanted]
    extras = (
        ("prompts", cfg.prompts),
        ("benchmark", cfg.benchmark),
        ("execution", cfg.problems),
        ("safim", cfg.safim),
        ("crosscodeeval", cfg.crosscodeeval),
    )
    for extra, given in extras:
        if extra == "execution" and "humaneval-infilling" in wanted:
            continue  # the problems file is the infilling task's
        if given is not None and extra not in wanted:
            wanted.append(extra)
    tasks: list[Task] = []
    for name in dict.fromkeys(wanted):
        built = TASKS[name](cfg, rows, stats) if name in TASKS else None
        tasks += built if isinstance(built, list) else [built] if built is not None else []
    return tasks
