"""Readers and scorers for published FIM benchmarks, in their own file formats.

* SAFIM (Gong et al. 2024, gonglinyuan/safim): rows ``{task_id, lang, prompt, eval_prompt,
  ground_truth, unit_tests}``; the hole in ``prompt`` is the language's "TODO: Your code here" comment,
  ``eval_prompt`` holds ``{{completion}}``. A completion is truncated by the syntax-aware rule of its
  split (block: drop trailing lines until the filled program parses; control: the first line in
  Python, up to the unmatched ``)`` elsewhere; api: up to the ``)`` closing the first call), then
  passes when it equals the ground truth, or when the filled program gives the expected output on
  every unit test (stdin in, stdout compared), or, without unit tests (the API split), when it
  matches the ground truth ignoring whitespace (Python calls: same arguments by AST).
* CrossCodeEval (Ding et al. 2023): rows ``{prompt, groundtruth, right_context, metadata: {task_id,
  file, ...}, crossfile_context: {text, list: [{retrieved_chunk, filename, score}]}}``; scored by exact
  match, edit similarity and identifier match of the first line, without and with the retrieved
  chunks as repository context (laid out in the model's format, as serve lays out its context).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import InputError

SAFIM_PLACEHOLDER = {
    "python": "# TODO: Your code here",
    "java": "/* TODO: Your code here */",
    "cpp": "/* TODO: Your code here */",
    "csharp": "/* TODO: Your code here */",
}
SAFIM_GRAMMAR = {"python": "python", "java": "java", "cpp": "cpp", "csharp": "csharp"}
SAFIM_SPLITS = ("block", "control", "api")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """JSON lines, plain or gzipped, each an object."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"benchmark file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object")
                rows.append(row)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON lines: {error.msg} (line {error.lineno})") from None
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def _need(row: dict[str, Any], fields: tuple[str, ...], path: Path, index: int) -> None:
    missing = [name for name in fields if name not in row]
    if missing:
        raise InputError(f"{path}: row {index + 1} lacks field(s) {', '.join(missing)}")


# --- SAFIM ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafimProblem:
    """One SAFIM hole."""

    task_id: str
    lang: str
    split: str
    prefix: str
    suffix: str
    eval_prompt: str
    ground_truth: str
    unit_tests: list[dict[str, Any]] = field(default_factory=list)

    def filled(self, completion: str) -> str:
        return self.eval_prompt.replace("{{completion}}", completion)


def _safim_split(path: Path, task_id: str) -> str:
    for name in SAFIM_SPLITS:
        if name in path.name or task_id.startswith(name):
            return name
    return "block"


def read_safim(path: str | Path, split: str | None = None) -> list[SafimProblem]:
    """Read a SAFIM file (block, control or api split: from ``split``, the file name or the task ids)."""
    path = Path(path)
    problems = []
    for index, row in enumerate(read_jsonl(path)):
        _need(row, ("task_id", "lang", "prompt", "eval_prompt", "ground_truth"), path, index)
        lang = row["lang"]
        if lang not in SAFIM_PLACEHOLDER:
            raise InputError(f"{path}: row {index + 1}: unknown lang {lang!r}")
        parts = row["prompt"].split(SAFIM_PLACEHOLDER[lang])
        if len(parts) != 2 or row["eval_prompt"].count("{{completion}}") != 1:
            raise InputError(f"{path}: row {index + 1}: the prompt must hold the hole placeholder once")
        problems.append(
            SafimProblem(
                str(row["task_id"]),
                lang,
                split or _safim_split(path, str(row["task_id"])),
                parts[0],
                parts[1],
                row["eval_prompt"],
                row["ground_truth"],
                list(row.get("unit_tests") or []),
            )
        )
    return problems


def _parses(problem: SafimProblem, completion: str) -> bool:
    from codetune.languages import get_language, parse

    tree = parse(get_language(SAFIM_GRAMMAR[problem.lang]), problem.filled(completion))
    return not tree.root_node.has_error


def safim_truncate(problem: SafimProblem, completion: str) -> str:
    """SAFIM's syntax-aware truncation for the problem's split."""
    if problem.split == "control":
        if problem.lang == "python":
            return next((line for line in completion.splitlines() if line.strip()), "")
        depth = 0
        for index, char in enumerate(completion):
            depth += (char == "(") - (char == ")")
            if depth == -1:
                return completion[:index]
        return completion
    if problem.split == "api":
        depth = 0
        for index, char in enumerate(completion):
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth <= 0:
                    return completion[: index + 1]
        return completion
    lines = completion.splitlines(keepends=True)
    while lines and not _parses(problem, "".join(lines)):
        lines.pop()
    return "".join(lines)


def _call_signature(code: str) -> Any:
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return None
    if not isinstance(tree.body, ast.Call):
        return None
    return [ast.dump(a) for a in tree.body.args], {k.arg: ast.dump(k.value) for k in tree.body.keywords}


def safim_syntax_match(completion: str, truth: str, lang: str) -> bool:
    """Equal ignoring whitespace; Python calls compare their arguments by AST."""
    left, right = re.sub(r"\s+", "", completion), re.sub(r"\s+", "", truth)
    if lang == "python":
        ours, theirs = _call_signature(left), _call_signature(right)
        if ours is not None and theirs is not None:
            return ours == theirs
    return left == right


def _outputs_match(got: str, expected: list[str] | str) -> bool:
    wanted = expected if isinstance(expected, list) else [expected]
    normal = [line.rstrip() for line in got.strip().splitlines()]
    return any(normal == [line.rstrip() for line in w.strip().splitlines()] for w in wanted)


def safim_score(
    problems: list[SafimProblem],
    completions: list[str],
    *,
    allow_execution: bool = False,
    unsafe_network: bool = False,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """pass@1 by SAFIM's protocol; Python unit tests run in the sandbox (others: exact match only)."""
    import sys

    from codetune.evaluate.sandbox import SandboxLimits, run_sandboxed

    rows, passed, not_run = [], 0, 0
    for problem, raw in zip(problems, completions):
        completion = safim_truncate(problem, raw)
        if problem.unit_tests and completion == problem.ground_truth:
            ok, how = True, "exact"
        elif problem.unit_tests and problem.lang == "python" and allow_execution:
            ok, how = True, "executed"
            for test in problem.unit_tests:
                result = run_sandboxed(
                    [sys.executable, "{file}"],
                    {"main.py": problem.filled(completion)},
                    limits=SandboxLimits(wall_seconds=timeout, cpu_seconds=int(timeout)),
                    unsafe_network=unsafe_network,
                    stdin=str(test.get("input", "")),
                )
                if not (result.passed and _outputs_match(result.stdout, test.get("output", []))):
                    ok = False
                    break
        elif problem.unit_tests:
            ok, how = completion == problem.ground_truth, "not_executed"
            not_run += 1
        else:
            ok, how = safim_syntax_match(completion, problem.ground_truth, problem.lang), "syntax_match"
        passed += ok
        rows.append({"task_id": problem.task_id, "passed": ok, "how": how, "completion": completion})
    n = max(len(rows), 1)
    return {"pass@1": round(100 * passed / n, 2), "not_executed": not_run, "n": len(rows), "rows": rows}


# --- CrossCodeEval -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossCodeEvalExample:
    """One CrossCodeEval cursor: the file before it, the line to predict, the file after it."""

    task_id: str
    prompt: str
    groundtruth: str
    right_context: str
    crossfile_context: str
    path: str = ""  # the file of the cursor (metadata.file)
    # (file, chunk, score) of each retrieved chunk (crossfile_context.list), best first; the score is
    # null in the files whose chunks were not reranked
    crossfile_chunks: tuple[tuple[str, str, float | None], ...] = ()
    repository: str = ""  # metadata.repository, e.g. "owner-name-commit"


def read_crosscodeeval(path: str | Path) -> list[CrossCodeEvalExample]:
    """Read a CrossCodeEval file (``line_completion*.jsonl``; the cross-file context is optional).

    The fields are those amazon-science/cceval writes (prompt_builder/augment_with_cfc.py) and reads
    (scripts/eval.py, eval_metric.py): ``prompt``, ``groundtruth``, ``right_context``, ``metadata``
    (``task_id``, ``repository``, ``file``, ``*_start_lineno``) and ``crossfile_context``: ``{text,
    list: [{retrieved_chunk, filename, score}]}``, or ``""``/``{}`` when no context was found.
    """
    path = Path(path)
    examples = []
    for index, row in enumerate(read_jsonl(path)):
        _need(row, ("prompt", "groundtruth"), path, index)
        context = row.get("crossfile_context") or {}
        text = context.get("text", "") if isinstance(context, dict) else str(context)
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        chunks = context.get("list") if isinstance(context, dict) else None
        triples = tuple(
            (str(c.get("filename") or ""), c["retrieved_chunk"], _score(c.get("score")))
            for c in chunks or []
            if isinstance(c, dict)
            and isinstance(c.get("retrieved_chunk"), str)
            and c["retrieved_chunk"].strip()
        )
        examples.append(
            CrossCodeEvalExample(
                str(meta.get("task_id", index)),
                row["prompt"],
                row["groundtruth"],
                row.get("right_context", ""),
                text or "",
                str(meta.get("file") or ""),
                triples,
                str(meta.get("repository") or ""),
            )
        )
    return examples


def _score(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
