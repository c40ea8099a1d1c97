"""HumanEval infilling (Bavarian et al. 2022) scored as published, on any file of its shape.

The official protocol (openai/human-eval-infilling): a completion passes when the program
``prompt + completion + suffix + "\\n" + test + "\\n" + f"check({entry_point})"`` runs to a clean exit
within 3 seconds; pass@k is the unbiased estimator of Chen et al. 2021. Exact match compares the
stripped completion with the stripped ``canonical_solution``.

Programs run in the sandbox. Starting a sandbox costs far more than a HumanEval test, so one
sandbox runs a chunk of programs: its runner forks a child per program (its own working directory,
its own 3 s deadline, killed with its process group) and reports each result as it ends. A program
that kills the runner fails alone; the rest of its chunk reruns in a fresh sandbox.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from codetune.errors import InputError
from codetune.evaluate.passk import mean_pass_at_k

TIMEOUT_SECONDS = 3.0
BUNDLED = {"single-line": "HumanEval-SingleLineInfilling.jsonl.gz"}
FIELDS = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")
CHUNK = 48

# Runs inside one sandbox: argv = timeout, first index; programs are p00000.py, p00001.py, ...
_RUNNER = r"""
import json, os, signal, sys, time
timeout, first = float(sys.argv[1]), int(sys.argv[2])
names = sorted(n for n in os.listdir("programs") if n.endswith(".py"))
for index in range(first, len(names)):
    path = os.path.abspath(os.path.join("programs", names[index]))
    run_dir = os.path.abspath(os.path.join("runs", str(index)))
    os.makedirs(run_dir)
    print(json.dumps({"start": index}), flush=True)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.chdir(run_dir)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        code = 0
        try:
            with open(path, encoding="utf-8") as handle:
                source = handle.read()
            sys.argv = [path]
            exec(compile(source, path, "exec"), {"__name__": "__main__", "__file__": path})
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + timeout
    status = "timeout"
    while time.monotonic() < deadline:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status = "passed" if os.waitstatus_to_exitcode(wait_status) == 0 else "failed"
            break
        time.sleep(0.002)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if status == "timeout":
        os.waitpid(pid, 0)
    print(json.dumps({"index": index, "status": status}), flush=True)
"""


@dataclass(frozen=True)
class InfillingProblem:
    """One hole: the code around it, the hidden line(s) and the tests."""

    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str
    entry_point: str

    def program(self, completion: str) -> str:
        """The program the official harness runs for ``completion``."""
        return f"{self.prompt}{completion}{self.suffix}\n{self.test}\ncheck({self.entry_point})"


def bundled_path(name: str = "single-line") -> Path:
    """Path of a benchmark file shipped inside the package (with its MIT licence beside it)."""
    if name not in BUNDLED:
        raise InputError(f"unknown bundled HumanEval infilling file {name!r}; have: {', '.join(BUNDLED)}")
    base = resources.files("codetune") / "assets" / "benchmarks" / "human-eval-infilling"
    return Path(str(base / BUNDLED[name]))


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    from codetune.evaluate.published import read_jsonl

    return list(enumerate(read_jsonl(path), 1))


def read_problems(path: str | Path | None = None) -> list[InfillingProblem]:
    """Read a HumanEval infilling file (single-line, multi-line or random-span); the bundled one if None."""
    path = Path(path) if path is not None else bundled_path()
    problems, seen = [], set()
    for number, row in _rows(path):
        missing = [name for name in FIELDS if not isinstance(row.get(name), str)]
        if missing:
            raise InputError(f"{path}:{number}: missing or non-string field(s): {', '.join(missing)}")
        if row["task_id"] in seen:
            raise InputError(f"{path}:{number}: duplicate task_id {row['task_id']!r}")
        seen.add(row["task_id"])
        problems.append(InfillingProblem(**{name: row[name] for name in FIELDS}))
    if not problems:
        raise InputError(f"{path}: no problems")
    return problems


def read_samples(path: str | Path, problems: Sequence[InfillingProblem]) -> dict[str, list[str]]:
    """Read ``{task_id, completion}`` rows (several per task for pass@k), keyed by task id."""
    path = Path(path)
    known = {problem.task_id for problem in problems}
    samples: dict[str, list[str]] = {}
    for number, row in _rows(path):
        task, completion = row.get("task_id"), row.get("completion")
        if not isinstance(task, str) or not isinstance(completion, str):
            raise InputError(f'{path}:{number}: expected {{"task_id": str, "completion": str}}')
        if task not in known:
            raise InputError(f"{path}:{number}: task_id {task!r} is not in the problems file")
        samples.setdefault(task, []).append(completion)
    if not samples:
        raise InputError(f"{path}: no samples")
    return samples


def _run_chunk(programs: list[str], timeout: float, unsafe_network: bool) -> list[str]:
    from codetune.evaluate.sandbox import SandboxLimits, run_sandboxed

    statuses: list[str | None] = [None] * len(programs)
    files = {"runner.py": _RUNNER}
    files.update({f"programs/p{i:05d}.py": text for i, text in enumerate(programs)})
    first = 0
    while first < len(programs):
        remaining = len(programs) - first
        limits = SandboxLimits(
            wall_seconds=remaining * (timeout + 0.5) + 10,
            cpu_seconds=int(remaining * (timeout + 0.5) + 10),
            output_bytes=1 << 20,
        )
        result = run_sandboxed(
            [sys.executable, "{file}", str(timeout), str(first)],
            files,
            limits=limits,
            unsafe_network=unsafe_network,
        )
        started = None
        for line in result.stdout.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "start" in event:
                started = event["start"]
            elif "index" in event:
                statuses[event["index"]] = event["status"]
        if started is None:  # the runner itself could not start: nothing to blame on a program
            raise InputError(f"the sandbox could not run the test runner: {result.stderr.strip()[:300]}")
        if statuses[started] is None:  # this program took the runner down with it
            statuses[started] = "failed"
        first = next((i for i in range(started, len(programs)) if statuses[i] is None), len(programs))
    return [status or "failed" for status in statuses]


def score(
    problems: Sequence[InfillingProblem],
    samples: dict[str, list[str]],
    *,
    timeout: float = TIMEOUT_SECONDS,
    workers: int | None = None,
    unsafe_network: bool = False,
    ks: Sequence[int] = (1, 10, 100),
) -> dict[str, Any]:
    """Execute every sample; returns pass@k (k <= n), exact_match (percentages), n and per-task rows."""
    scored = [problem for problem in problems if problem.task_id in samples]
    jobs = [(p, completion) for p in scored for completion in samples[p.task_id]]
    programs = [problem.program(completion) for problem, completion in jobs]
    chunks = [programs[i : i + CHUNK] for i in range(0, len(programs), CHUNK)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        statuses = [
            s for chunk in pool.map(lambda c: _run_chunk(c, timeout, unsafe_network), chunks) for s in chunk
        ]
    rows: dict[str, dict[str, Any]] = {
        p.task_id: {"task_id": p.task_id, "n": 0, "passed": 0, "exact": 0, "statuses": []} for p in scored
    }
    for (problem, completion), status in zip(jobs, statuses):
        row = rows[problem.task_id]
        row["n"] += 1
        row["passed"] += status == "passed"
        row["exact"] += completion.strip() == problem.canonical_solution.strip()
        row["statuses"].append(status)
    counts = [(row["n"], row["passed"]) for row in rows.values()]
    result: dict[str, Any] = {k: 100 * v for k, v in mean_pass_at_k(counts, ks).items()}
    result["exact_match"] = 100 * sum(row["exact"] for row in rows.values()) / max(1, len(jobs))
    result["n"] = len(jobs)
    result["problems"] = len(rows)
    result["rows"] = list(rows.values())
    return result


def score_files(
    predictions: str | Path,
    problems: str | Path | None = None,
    *,
    allow_execution: bool = False,
    unsafe_network: bool = False,
) -> dict[str, Any]:
    """``codetune score --style humaneval-infilling``: pass@1 (pass@10 when n >= 10), exact match, n."""
    if not allow_execution:
        raise InputError(
            "humaneval-infilling runs the completions as programs; pass --allow-execution to run them "
            "in the sandbox"
        )
    loaded = read_problems(problems)
    result = score(loaded, read_samples(predictions, loaded), unsafe_network=unsafe_network)
    keys = [k for k in ("pass@1", "pass@10") if k in result]
    return {
        **{k: round(result[k], 2) for k in keys},
        "exact_match": round(result["exact_match"], 2),
        "n": result["n"],
    }
