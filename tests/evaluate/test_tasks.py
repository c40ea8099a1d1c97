"""Task builders: line cut points, FIM items, prompt files and CodeXGLUE benchmark files (no models)."""

from __future__ import annotations

import json

import pytest

from codetune.errors import ConfigError, InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.runner import parse_models
from codetune.evaluate.syntax import is_valid
from codetune.evaluate.tasks.benchmark import decode_codexglue
from codetune.evaluate.tasks.build import build_tasks
from codetune.evaluate.tasks.prompts import read_prompt_file

TEXT = "import os\n\n\ndef f(x):\n    y = x + 1\n    return y\n"


def test_line_completion_cuts_at_lines():
    cfg = EvalConfig(samples=5, tasks=["completion", "fim"])
    tasks = {t.name: t for t in build_tasks(cfg, [{"text": TEXT, "path": "a.py"}], {"format": "files"})}
    items = tasks["completion"].items
    assert len(items) == 3  # only the 3 non-blank lines after the first can be cut, each once
    for item in items:
        assert TEXT.startswith(item.prompt + item.reference) and item.prompt.endswith("\n")
    for item in tasks["fim"].items:
        assert item.prompt + item.reference + item.suffix == TEXT
    assert tasks["completion"].single_line and tasks["fim"].stop == ["\n"]


def test_mid_line_cuts_keep_indentation_in_the_prompt():
    cfg = EvalConfig(samples=5, tasks=["completion"], line_cut="mid", seed=3)
    (task,) = build_tasks(cfg, [{"text": TEXT, "path": "a.py"}], {"format": "files"})
    assert len(task.items) == 3
    for item in task.items:
        line_start = item.prompt.rfind("\n") + 1
        typed = item.prompt[line_start:]
        whole_line = typed + item.reference
        assert TEXT.startswith(item.prompt + item.reference)
        assert item.reference.strip() and "\n" not in item.reference
        assert typed.startswith(whole_line[: len(whole_line) - len(whole_line.lstrip())])
    assert any(not item.prompt.endswith("\n") for item in task.items)


def test_prompt_completion_rows():
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    (task,) = build_tasks(EvalConfig(samples=3, tasks=["completion"]), rows, {"format": "windows"})
    assert len(task.items) == 3 and all(i.reference == "c" + i.prompt[1:] for i in task.items)


def test_prompt_files(tmp_path):
    listed = tmp_path / "p.json"
    listed.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert read_prompt_file(listed) == read_prompt_file(lines) == ["a", "b"]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": 1}]')
    with pytest.raises(InputError, match="entry 0"):
        read_prompt_file(bad)


def test_codexglue_benchmark_files(tmp_path):
    assert decode_codexglue("def f ( ) : <EOL> <INDENT> return <NUM_LIT> <EOL> <DEDENT> x = <STR_LIT:a>") == (
        "def f ( ) :\n    return 0\nx = a"
    )
    method = tmp_path / "method.jsonl"
    method.write_text(
        json.dumps({"signature": "def f ( x ) :", "docstring": "Add one.", "body": "return x + 1"})
    )
    (task,) = build_tasks(EvalConfig(benchmark=method, tasks=[]), [], {})
    assert task.style == "codexglue-method" and task.items[0].reference == "return x + 1"
    assert task.items[0].prompt == 'def f ( x ) :\n    """Add one."""\n'
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"input": "x"}\n')
    with pytest.raises(InputError, match="need"):
        build_tasks(EvalConfig(benchmark=broken, benchmark_style="codexglue-line", tasks=[]), [], {})


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown task"):
        build_tasks(EvalConfig(tasks=["nope"]), [], {})
    with pytest.raises(ConfigError, match="share a name"):
        parse_models(["a=tiny-gpt-bigcode", "a=tiny-llama"])
    assert [m.name for m in parse_models(["base=tiny-gpt-bigcode", "tiny-llama"])] == ["base", "tiny-llama"]


def test_python_strict_syntax():
    assert not is_valid("python", "def square(x):\n\n\n")  # tree-sitter alone accepts the empty body
    assert is_valid("python", "def square(x):\n    return x * x\n")
