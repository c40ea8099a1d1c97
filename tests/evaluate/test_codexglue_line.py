"""CodeXGLUE line completion: a model's plain-code line is scored against the space-tokenised ``gt``
after the same tokenisation (microsoft/CodeXGLUE Code-Code/CodeCompletion-token/dataset/py150/preprocess.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetune.evaluate.codexglue import tokenize_line
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.build import build_tasks

# (reference as CodeXGLUE writes it, what a model generates, language)
SAME = [
    (
        "self . assertEqual ( response . status_code , <NUM_LIT:200> )",
        "self.assertEqual(response.status_code, 200)",
        "python",
    ),
    (
        'return os . path . join ( root , "<STR_LIT>" )',
        'return os.path.join(root, "data.json")  # the file',
        "python",
    ),
    ("= <NUM_LIT:0> ;", "= 0;", "java"),
    (
        'throw new IllegalArgumentException ( "<STR_LIT>" ) ;',
        'throw new IllegalArgumentException("bad input");',
        "java",
    ),
    ("if ( a != null && i ++ < n )", "if (a != null && i++ < n)", "java"),
]


@pytest.mark.parametrize(("gt", "prediction", "language"), SAME)
def test_predictions_are_tokenised_like_the_references(gt: str, prediction: str, language: str) -> None:
    from codetune.evaluate.codexglue import score_line

    assert score_line([gt], [tokenize_line(prediction, gt, language)])["exact_match"] == 100
    assert score_line([gt], [prediction])["exact_match"] == 0  # untokenised, the same code never matches


def test_benchmark_exact_match_counts_equal_code(tmp_path: Path) -> None:
    bench = tmp_path / "line.jsonl"
    entries = [
        {"input": "<s> import os <EOL> def load ( root ) : <EOL> <INDENT>", "gt": SAME[0][0]},
        {
            "input": "<s> def path ( root ) : <EOL> <INDENT>",
            "gt": 'return os . path . join ( root , "<STR_LIT>" )',
        },
        {"input": "<s> x = <NUM_LIT> <EOL>", "gt": "y = x + <NUM_LIT:1>"},
    ]
    bench.write_text("".join(json.dumps(e) + "\n" for e in entries))
    cfg = EvalConfig(benchmark=bench, tasks=["benchmark"])
    (task,) = build_tasks(cfg, [], {})
    generations = [
        ["self.assertEqual(response.status_code, 200)"],
        ['return os.path.join(root, "config.yaml")'],
        ["y = x + 2"],  # a different number: not a match
    ]
    scores, _ = task.score(generations, cfg, "python")
    assert scores["exact_match"] == pytest.approx(66.67)
    assert scores["edit_sim"] > 90
