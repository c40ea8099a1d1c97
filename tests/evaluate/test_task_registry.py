"""The task registry, row by row: each row names a module that builds its task, a task built without
its input is skipped (or refused, naming what it needs), and the tasks that need no external file
score the references themselves perfectly, through their own ``score``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetune.errors import ConfigError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks import STYLES, TASKS
from codetune.evaluate.tasks.base import Task
from codetune.evaluate.tasks.build import build_tasks, task_module

TEXT = "import os\n\n\ndef area(width, height):\n    total = width * height\n    return total\n\n\nprint(area(2, 3))\n"
ROWS = [
    {"text": TEXT, "path": "geometry.py", "repo": "r"},
    {"text": TEXT.replace("area", "size"), "path": "b.py"},
]
# Rows whose input is a file or a flag: built without it, each is skipped or refused with a clear line.
NEEDS = {"execution": None, "humaneval-infilling": "--allow-execution"}


@pytest.mark.parametrize("name", list(TASKS))
def test_each_row_builds_its_task_or_skips_without_input(name):
    module = task_module(name)
    assert callable(module.build)
    assert all(hasattr(module, "score_style") for style, row in STYLES.items() if row == name)
    if NEEDS.get(name):
        with pytest.raises(ConfigError, match=NEEDS[name]):
            build_tasks(EvalConfig(tasks=[name]), [], {})
    built = build_tasks(EvalConfig(tasks=[name], allow_execution=True, limit=2), [], {})
    assert all(isinstance(t, Task) for t in built)
    if name != "humaneval-infilling":  # the only one with an input of its own (the bundled problems)
        assert built == []


def _oracle(task: Task) -> list[list[str]]:
    return [[item.reference or ""] for item in task.items]


@pytest.mark.parametrize(
    ("name", "metric"),
    [("completion", "exact_match"), ("fim", "fim_exact_match"), ("editor", "first_line_exact_match")],
)
def test_reference_tasks_score_their_references_perfectly(name, metric):
    cfg = EvalConfig(tasks=[name], samples=6, context="without")
    [task] = build_tasks(cfg, ROWS, {"format": "files"})
    assert task.name == name and task.items
    scores, rows = task.score(_oracle(task), cfg, None)
    assert scores[metric] == 100.0 and len(rows) == len(task.items)


def test_benchmark_and_prompt_files_score_through_their_tasks(tmp_path: Path):
    bench = tmp_path / "method.jsonl"
    entries = [{"signature": "def add ( a , b ) :", "docstring": "Add two numbers.", "body": "return a + b"}]
    bench.write_text("".join(json.dumps(e) + "\n" for e in entries))
    cfg = EvalConfig(tasks=["benchmark"], benchmark=bench)
    [task] = build_tasks(cfg, [], {})
    assert task.score(_oracle(task), cfg, "python")[0]["exact_match"] == 100.0
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "def f(x):\n"}]))
    cfg = EvalConfig(tasks=["prompts"], prompts=prompts, n=2)
    [task] = build_tasks(cfg, [], {})
    scores, _ = task.score([["    return x\n", "    return (\n"]], cfg, "python")
    assert scores["syntax_valid"] == 0.5 and scores["generations"] == 2


def test_loss_is_a_task_measured_on_the_model():
    from codetune.evaluate.session import ModelRun
    from codetune.modeling.loading import load_model, load_tokenizer

    cfg = EvalConfig(tasks=["loss"], loss_examples=2)
    [task] = build_tasks(cfg, ROWS, {"format": "files"})
    assert task.name == "loss" and task.prefix == "" and task.size == 2
    run = ModelRun("tiny", load_model("tiny-gpt-bigcode"), load_tokenizer("tiny-gpt-bigcode"), cfg, None)
    scores = task.evaluate(run).scores
    assert scores["loss"] > 0 and scores["loss_tokens"] > 0
