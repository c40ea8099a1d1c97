"""Evaluation tasks: what to prompt with and what to compare against. One registry, one function each.

A task builder gets the config and the held-out rows and returns a ``Task`` (or None when it has
no inputs, e.g. no prompt file given). Generation and scoring happen in the runner.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.evaluate.config import EvalConfig


@dataclass
class Item:
    """One prompt: its text (or FIM prefix/suffix), the reference when there is one, and where it came from."""

    prompt: str
    reference: str | None = None
    suffix: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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


TaskBuilder = Callable[[EvalConfig, list[dict[str, Any]], dict[str, Any]], "Task | None"]
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
    return Task(
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


def _crosscodeeval(cfg: EvalConfig, with_context: bool) -> Task | None:
    from codetune.evaluate.published import read_crosscodeeval

    if cfg.crosscodeeval is None:
        return None
    examples = read_crosscodeeval(cfg.crosscodeeval)[: cfg.limit]
    items = [
        Item(
            (e.crossfile_context + e.prompt) if with_context else e.prompt,
            e.groundtruth,
            suffix=e.right_context,
            meta={"task_id": e.task_id},
        )
        for e in examples
    ]
    name = "crosscodeeval_context" if with_context else "crosscodeeval"
    how = "with its cross-file context" if with_context else "without cross-file context"
    return Task(
        name,
        items,
        f"CrossCodeEval line completion {how} ({Path(cfg.crosscodeeval).name})",
        ["first_line_exact_match", "edit_sim", "identifier_em", "identifier_f1"],
        stop=["\n"],
        single_line=True,
        fim_optional=True,
    )


@register_task("crosscodeeval")
def crosscodeeval(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """CrossCodeEval without its cross-file context."""
    return _crosscodeeval(cfg, with_context=False)


@register_task("crosscodeeval_context")
def crosscodeeval_context(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> Task | None:
    """CrossCodeEval with its cross-file context prepended to the prompt."""
    return _crosscodeeval(cfg, with_context=True)


def build_tasks(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> list[Task]:
    """Every requested generation task that has inputs."""
    unknown = [t for t in cfg.tasks if t not in TASKS and t != "loss"]
    if unknown:
        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; known: loss, {', '.join(TASKS)}")
    wanted = list(cfg.tasks)
    extras = (
        ("prompts", cfg.prompts),
        ("benchmark", cfg.benchmark),
        ("execution", cfg.problems),
        ("safim", cfg.safim),
        ("crosscodeeval", cfg.crosscodeeval),
        ("crosscodeeval_context", cfg.crosscodeeval),
    )
    for extra, given in extras:
        if extra == "execution" and "humaneval-infilling" in wanted:
            continue  # the problems file is the infilling task's
        if given is not None and extra not in wanted:
            wanted.append(extra)
    tasks = [task for name in wanted if name in TASKS and (task := TASKS[name](cfg, rows, stats)) is not None]
    return tasks
