"""SAFIM and CrossCodeEval files, in their published field layout, read and scored by their protocols."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codetune.errors import InputError
from codetune.evaluate.published import (
    read_crosscodeeval,
    read_safim,
    safim_score,
    safim_syntax_match,
    safim_truncate,
)

PY_HOLE = "# TODO: Your code here"

BLOCK = {
    "task_id": "block_completion_000001",
    "lang": "python",
    "prompt": f"t = int(input())\nfor _ in range(t):\n    {PY_HOLE}\n",
    "eval_prompt": "t = int(input())\nfor _ in range(t):\n    {{completion}}\n",
    "ground_truth": "a, b = map(int, input().split())\n    print(a + b)",
    "unit_tests": [
        {"input": "2\n1 2\n3 4\n", "output": ["3\n7\n"]},
        {"input": "1\n-5 5\n", "output": ["0"]},
    ],
}
CONTROL = {
    "task_id": "control_completion_000002",
    "lang": "python",
    "prompt": f"t = int(input())\nfor {PY_HOLE}\n    print(int(input()) * 2)\n",
    "eval_prompt": "t = int(input())\nfor {{completion}}\n    print(int(input()) * 2)\n",
    "ground_truth": "_ in range(t):",
    "unit_tests": [{"input": "2\n1\n5\n", "output": ["2\n10"]}],
}
API = {
    "task_id": "api_completion_000003",
    "lang": "python",
    "prompt": f"import numpy as np\nn = 3\na = {PY_HOLE}\n",
    "eval_prompt": "import numpy as np\nn = 3\na = {{completion}}\n",
    "ground_truth": "np.ones((n, n), dtype=int)",
}


def _write(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_safim_reader_splits_the_hole_and_knows_the_split(tmp_path):
    (block,) = read_safim(_write(tmp_path / "block_completion.jsonl.gz", [BLOCK]))
    assert block.split == "block"
    assert block.prefix.endswith("range(t):\n    ") and block.suffix == "\n"
    (api,) = read_safim(_write(tmp_path / "some.jsonl", [API]))
    assert api.split == "api"  # from the task id
    with pytest.raises(InputError, match="placeholder"):
        read_safim(_write(tmp_path / "bad.jsonl", [{**API, "prompt": "no hole"}]))


def test_safim_truncation_per_split(tmp_path):
    block, control, api = read_safim(_write(tmp_path / "all.jsonl", [BLOCK, CONTROL, API]))
    # block: trailing lines are dropped until the filled program parses
    assert safim_truncate(block, BLOCK["ground_truth"] + "\n  def (:\n") == BLOCK["ground_truth"] + "\n"
    # control (Python): the first non-empty line
    assert safim_truncate(control, "\n_ in range(t):\n    junk") == "_ in range(t):"
    # api: up to the bracket that closes the first call
    assert safim_truncate(api, "np.ones((n, n), dtype=int)\nprint(a)") == "np.ones((n, n), dtype=int)"
    assert safim_syntax_match("np.ones( (n,n), dtype = int )", API["ground_truth"], "python")
    assert not safim_syntax_match("np.zeros((n, n))", API["ground_truth"], "python")


def test_safim_protocol_exact_then_unit_tests_then_syntax_match(tmp_path):
    problems = read_safim(_write(tmp_path / "all.jsonl", [BLOCK, CONTROL, API]))
    oracle = safim_score(problems, [BLOCK["ground_truth"], CONTROL["ground_truth"], API["ground_truth"]])
    assert oracle["pass@1"] == 100.0
    assert [r["how"] for r in oracle["rows"]] == ["exact", "exact", "syntax_match"]
    # a different but correct block passes only by running the unit tests in the sandbox
    other = ["x, y = map(int, input().split())\n    print(y + x)", "_ in range(t - 1):", "np.ones((n, n))"]
    without = safim_score(problems, other)
    assert without["not_executed"] == 2 and without["pass@1"] == 0.0
    executed = safim_score(problems, other, allow_execution=True)
    assert [r["passed"] for r in executed["rows"]] == [True, False, False]
    assert executed["pass@1"] == pytest.approx(33.33)


def cceval_row(i: int, context: object) -> dict:
    """A row as amazon-science/cceval's line_completion*.jsonl has it (prompt_builder/augment_with_cfc.py
    writes crossfile_context; scripts/eval.py and eval_metric.py read the rest)."""
    return {
        "prompt": f"from util import scale_{i}\n\nvalue = ",
        "groundtruth": f"scale_{i}(3)",
        "right_context": "\nprint(value)\n",
        "metadata": {
            "task_id": f"project_cc_python/{i}",
            "repository": "acme-geometry-0a1b2c3",
            "file": "geometry/main.py",
            "context_start_lineno": 0,
            "groundtruth_start_lineno": 2,
            "right_context_start_lineno": 3,
        },
        "crossfile_context": context,
    }


def cceval_context(i: int, score: float | None) -> dict:
    chunk = f"def scale_{i}(x):\n    return x * {i}"
    return {
        "text": "# Here are some relevant code fragments from other files of the repo:\n\n"
        "# the below code fragment can be found in:\n# geometry/util.py\n"
        + "\n".join(f"# {line}" for line in chunk.splitlines())
        + "\n\n",
        "list": [
            {"retrieved_chunk": chunk, "filename": "geometry/util.py", "score": score},
            {"retrieved_chunk": "\n", "filename": "geometry/blank.py", "score": score},
        ],
    }


def test_crosscodeeval_reader_and_both_ways_in_eval(tmp_path):
    # a reranked row (scores), a row whose chunks were not reranked (score null), and the two shapes
    # cceval writes when it found nothing: "" (project not found) and {} (no chunk)
    rows = [cceval_row(0, cceval_context(0, 0.93)), cceval_row(1, cceval_context(1, None))]
    rows += [cceval_row(2, ""), cceval_row(3, {})]
    rows += [cceval_row(4, {"text": cceval_context(4, None)["text"], "list": []})]  # the text alone
    path = _write(tmp_path / "line_completion_rg1_bm25.jsonl", rows)
    examples = read_crosscodeeval(path)
    assert [e.task_id for e in examples] == [f"project_cc_python/{i}" for i in range(5)]
    assert all(e.path == "geometry/main.py" and e.repository == "acme-geometry-0a1b2c3" for e in examples)
    assert examples[0].crossfile_context.startswith("# Here are some relevant code fragments")
    # blank chunks dropped; the score as given, null where the file has none
    assert examples[0].crossfile_chunks == (("geometry/util.py", "def scale_0(x):\n    return x * 0", 0.93),)
    assert examples[1].crossfile_chunks[0][2] is None
    assert [(e.crossfile_context, e.crossfile_chunks) for e in examples[2:4]] == [("", ()), ("", ())]

    # with context, the model gets the chunks and the repository's name, in its repository format
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.tasks.crosscodeeval import build as crosscodeeval
    from codetune.generation.request import build_request
    from codetune.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    [task] = crosscodeeval(EvalConfig(models=["m"], crosscodeeval=path, context="with"), [], {})

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    item = task.items[0]
    prompt = build_request(
        tokenizer, item.prompt, item.suffix, repo_context=task.context(item, count)
    ).prompt_text
    assert "<repo_name>acme-geometry-0a1b2c3" in prompt
    assert prompt.index("def scale_0(x)") < prompt.index("from util import scale_0")
    assert task.context(task.items[2], count) is None  # nothing retrieved: no context at all

    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate

    evaluate(
        EvalConfig(models=["tiny-gpt-bigcode"], crosscodeeval=path, max_new_tokens=6, out=tmp_path / "report")
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {"crosscodeeval", "crosscodeeval_context"} <= set(report["tasks"])
    for task in ("crosscodeeval", "crosscodeeval_context"):
        scores = report["tasks"][task]["models"]["tiny-gpt-bigcode"]
        assert {"first_line_exact_match", "edit_sim", "identifier_em", "identifier_f1"} <= set(scores)
    with_context = [r for r in report["rows"] if r["task"] == "crosscodeeval_context"]
    # a row with only the rendered text: it goes before the prompt as it is
    [text_only] = [r for r in with_context if r["task_id"] == "project_cc_python/4"]
    assert "# def scale_4(x):" in text_only["prompt_tail"]
