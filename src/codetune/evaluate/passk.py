"""pass@k on HumanEval / MultiPL-E shaped problems, executed in the sandbox.

A problem is a JSON object with ``prompt`` and ``tests`` (MultiPL-E) or ``test`` + ``entry_point``
(HumanEval), optional ``stop_tokens`` and a ``name``/``task_id``. The program run is
``prompt + completion + tests``; it passes when it exits 0 within the limits.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import InputError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), computed stably."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(results: Sequence[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over problems given (n, c) per problem, for each k that every problem allows."""
    out = {}
    for k in ks:
        if results and all(n >= k for n, _ in results):
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in results) / len(results)
    return out


@dataclass
class Problem:
    """One execution problem."""

    name: str
    prompt: str
    tests: str
    stop: list[str]


def read_problems(path: str | Path) -> list[Problem]:
    """Read a HumanEval/MultiPL-E JSONL (or JSON list) file of problems."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"problems file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        rows = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON/JSONL: {error.msg} (line {error.lineno})") from None
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row or not ("tests" in row or "test" in row):
            raise InputError(f"{path}: problem {i} needs 'prompt' and 'tests' (or HumanEval 'test')")
        tests = row.get("tests") or row["test"]
        if "entry_point" in row and "tests" not in row:
            tests = f"{tests}\n\ncheck({row['entry_point']})\n"
        name = str(row.get("name") or row.get("task_id") or i)
        problems.append(Problem(name, row["prompt"], tests, list(row.get("stop_tokens") or [])))
    return problems


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut a completion at the earliest stop token."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def execute(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    *,
    command: Sequence[str] | None = None,
    extension: str = ".py",
    limits: Any = None,
    unsafe_network: bool = False,
    unsafe: Sequence[str] = (),
    ks: Sequence[int] = (1, 10, 100),
    workers: int | None = None,
) -> dict[str, Any]:
    """Run every completion of every problem (several sandboxes at once); returns pass@k and per-problem rows."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from codetune.evaluate.sandbox import require, run_sandboxed

    command = list(command or [sys.executable, "{file}"])
    unsafe = [*unsafe, *(["network"] if unsafe_network else [])]
    require(unsafe)  # probe once, and refuse before any thread starts
    jobs = [
        (p_index, problem.prompt + truncate_at_stop(completion, problem.stop) + "\n" + problem.tests)
        for p_index, (problem, samples) in enumerate(zip(problems, completions))
        for completion in samples
    ]

    def run(job: tuple[int, str]) -> Any:
        return run_sandboxed(command, {f"main{extension}": job[1]}, limits=limits, unsafe=unsafe)

    # Each run is a subprocess; threads only wait on them.
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(run, jobs))
    rows = [{"problem": p.name, "n": 0, "passed": 0, "statuses": []} for p in problems[: len(completions)]]
    for (p_index, _), result in zip(jobs, results):
        row = rows[p_index]
        row["n"] += 1
        row["passed"] += int(result.passed)
        row["statuses"].append(result.status)
    counts = [(row["n"], row["passed"]) for row in rows]
    return {**mean_pass_at_k(counts, ks), "problems": len(rows), "rows": rows}
