"""HumanEval infilling through `codetune score`: the bundled file, the official protocol, pass@k."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

from codetune.evaluate.infilling import bundled_path


def _problems() -> list[dict]:
    with gzip.open(bundled_path(), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(tmp_path: Path, samples: list[dict], *extra: str) -> dict:
    preds = _write(tmp_path / "samples.jsonl", samples)
    result = run_cli(
        "score",
        "--style",
        "humaneval-infilling",
        "--predictions",
        str(preds),
        "--allow-execution",
        "--json",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _exec_program(program: str) -> None:
    exec(compile(program, "program.py", "exec"), {"__name__": "__main__"})


def _plain_passes(problem: dict, completion: str) -> bool:
    """The protocol written out independently, as human-eval runs it: a forked process, 3 s, clean exit."""
    import multiprocessing

    program = (
        problem["prompt"] + completion + problem["suffix"] + "\n" + problem["test"] + "\n"
        f"check({problem['entry_point']})"
    )
    process = multiprocessing.get_context("fork").Process(target=_exec_program, args=(program,))
    process.start()
    process.join(3)
    if process.is_alive():
        process.kill()
        process.join()
        return False
    return process.exitcode == 0


def _plain_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_bundled_file_is_the_published_one():
    problems = _problems()
    assert len(problems) == 1033
    assert problems[0]["task_id"] == "SingleLineInfilling/HumanEval/0/L0"
    assert (bundled_path().parent / "LICENSE").read_text().startswith("The MIT License")


def test_oracle_completions_score_100_on_the_whole_file(tmp_path):
    samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in _problems()]
    scores = _score(tmp_path, samples)
    assert scores == {"pass@1": 100.0, "exact_match": 100.0, "n": 1033}


def test_mixed_samples_match_a_plain_reimplementation(tmp_path):
    # the first line of the first tasks: quick tests, so that a loaded machine cannot time them out
    problems = [p for p in _problems() if p["task_id"].endswith("/L0")][:8]
    variants = [
        lambda p: p["canonical_solution"],
        lambda p: "",
        lambda p: "    pass\n",
        lambda p: "    while True: pass\n",  # times out
        lambda p: "    import sys; sys.exit(3)\n",
        lambda p: "    raise SystemExit(0)\n",
        lambda p: p["canonical_solution"].replace("return", "return not", 1),
    ]
    samples, expected = [], {}
    for i, problem in enumerate(problems):
        for j in range(10):  # n = 10 for every problem, so pass@10 is defined
            completion = (
                variants[(i + j) % len(variants)](problem) if j % 3 else problem["canonical_solution"]
            )
            samples.append({"task_id": problem["task_id"], "completion": completion})
            n, c, exact = expected.get(problem["task_id"], (0, 0, 0))
            expected[problem["task_id"]] = (
                n + 1,
                c + _plain_passes(problem, completion),
                exact + (completion.strip() == problem["canonical_solution"].strip()),
            )
    scores = _score(tmp_path, samples)
    counts = list(expected.values())
    want1 = 100 * sum(_plain_pass_at_k(n, c, 1) for n, c, _ in counts) / len(counts)
    want10 = 100 * sum(_plain_pass_at_k(n, c, 10) for n, c, _ in counts) / len(counts)
    assert scores["n"] == len(samples)
    assert scores["pass@1"] == pytest.approx(round(want1, 2))
    assert scores["pass@10"] == pytest.approx(round(want10, 2))
    assert scores["exact_match"] == pytest.approx(round(100 * sum(e for *_, e in counts) / len(samples), 2))
    assert 0 < scores["pass@1"] < 100


def test_any_file_of_the_shape_plain_or_gzipped(tmp_path):
    problem = {
        "task_id": "MultiLineInfilling/HumanEval/0/L1_L2",
        "prompt": "def add(a, b):\n",
        "suffix": "    return c\n",
        "canonical_solution": "    c = a\n    c += b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "entry_point": "add",
    }
    plain = _write(tmp_path / "multi.jsonl", [problem])
    packed = tmp_path / "multi.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    samples = [
        {"task_id": problem["task_id"], "completion": problem["canonical_solution"]},
        {"task_id": problem["task_id"], "completion": "    c = a - b\n"},
    ]
    for path in (plain, packed):
        assert _score(tmp_path, samples, "--problems", str(path)) == {
            "pass@1": 50.0,
            "exact_match": 50.0,
            "n": 2,
        }


@pytest.mark.parametrize(
    ("samples", "flags", "message"),
    [
        ([{"task_id": "nope", "completion": ""}], ["--allow-execution"], "not in the problems file"),
        ([{"task_id": "SingleLineInfilling/HumanEval/0/L0"}], ["--allow-execution"], "completion"),
        ([{"task_id": "SingleLineInfilling/HumanEval/0/L0", "completion": ""}], [], "--allow-execution"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, samples, flags, message):
    preds = _write(tmp_path / "samples.jsonl", samples)
    result = run_cli("score", "--style", "humaneval-infilling", "--predictions", str(preds), *flags)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_eval_task_generates_through_the_serving_path_and_reports_rows(tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "eval", "--model", "tiny-gpt-bigcode", "--task", "humaneval-infilling", "--allow-execution",
        "--set", "limit=3", "--set", "max_new_tokens=8", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    scores = report["tasks"]["humaneval-infilling"]["models"]["tiny-gpt-bigcode"]
    assert {"pass@1", "exact_match", "syntax_valid"} <= set(scores)
    rows = [r for r in report["rows"] if r["task"] == "humaneval-infilling"]
    assert [r["task_id"] for r in rows] == [p["task_id"] for p in _problems()[:3]]
    # what was scored is what the editor would insert: one line, ending with its newline
    assert all(r["completion"].count("\n") == 1 and r["completion"].endswith("\n") for r in rows)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 and all(p["suffix"] for p in predictions)
    assert "single-line infilling" in (out / "report.md").read_text()


def test_a_model_without_fim_tokens_is_skipped_unless_asked_for_the_prefix_alone(tmp_path):
    common = (
        "eval", "--model", "tiny-codegen", "--task", "humaneval-infilling", "--allow-execution",
        "--set", "limit=3", "--set", "max_new_tokens=8",
    )  # fmt: skip
    skipped = run_cli(*common, "--out", str(tmp_path / "skip"))
    assert skipped.returncode == 0, skipped.stderr
    report = json.loads((tmp_path / "skip" / "report.json").read_text())
    assert "humaneval-infilling" not in report["tasks"]
    assert "no fill-in-the-middle tokens, task humaneval-infilling skipped" in skipped.stderr

    out = tmp_path / "prefix"
    alone = run_cli(*common, "--set", "fim_missing=prefix", "--out", str(out))
    assert alone.returncode == 0, alone.stderr
    report = json.loads((out / "report.json").read_text())
    task = report["tasks"]["humaneval-infilling"]
    assert task["prefix_alone"] == ["tiny-codegen"]
    assert {"pass@1", "exact_match", "syntax_valid"} <= set(task["models"]["tiny-codegen"])
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # the prompt the model saw is the problem's prefix, with no suffix
    assert [p["prefix"] for p in predictions] == [p["prompt"] for p in _problems()[:3]]
    assert all(p["suffix"] is None for p in predictions)
    assert (
        "`tiny-codegen`: no fill-in-the-middle tokens, so each got the prefix alone"
        in (out / "report.md").read_text()
    )
