"""Bad input to every command: one clear `error:` line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from codetune.cli import main


def invoke(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["codetune", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return int(stop.value.code or 0), captured.out + captured.err


def corpus_of_one_file(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def f(x):\n    y = x + 1\n    return y * 2\n\n\nprint(f(3))\n")
    return src


CASES = {
    "collect missing path": lambda t: [
        "collect",
        str(t / "nope"),
        "--language",
        "python",
        "--out",
        str(t / "out"),
    ],
    "collect unknown language": lambda t: [
        "collect",
        str(t),
        "--language",
        "klingon",
        "--out",
        str(t / "out"),
    ],
    "collect empty corpus": lambda t: [
        "collect",
        str(t / "empty"),
        "--language",
        "python",
        "--out",
        str(t / "out"),
    ],
    "build missing corpus": lambda t: [
        "build",
        str(t / "nope"),
        "--model",
        "tiny-gpt-bigcode",
        "--out",
        str(t / "out"),
    ],
    "build unknown model": lambda t: [
        "build",
        str(t / "corpus"),
        "--model",
        "no-org/no-model",
        "--out",
        str(t / "out"),
    ],
    "build unknown format": lambda t: [
        "build",
        str(t / "corpus"),
        "--format",
        "poems",
        "--out",
        str(t / "out"),
    ],
    "train missing dataset": lambda t: [
        "train",
        "--model",
        "tiny-llama",
        "--dataset",
        str(t / "nope"),
        "--out",
        str(t / "out"),
    ],
    "train unknown model": lambda t: [
        "train",
        "--model",
        "./no-model",
        "--dataset",
        str(t / "nope"),
        "--out",
        str(t / "out"),
    ],
    "train bad option value": lambda t: [
        "train",
        "--model",
        "tiny-llama",
        "--dataset",
        str(t),
        "--set",
        "lr=fast",
        "--out",
        str(t / "out"),
    ],
    "merge missing run": lambda t: ["merge", str(t / "nope"), "--out", str(t / "out")],
    "eval missing dataset": lambda t: [
        "eval",
        "--model",
        "tiny-llama",
        "--dataset",
        str(t / "nope"),
        "--out",
        str(t / "out"),
    ],
    "score missing file": lambda t: [
        "score",
        "--references",
        str(t / "r.txt"),
        "--predictions",
        str(t / "p.txt"),
    ],
    "generate missing input": lambda t: [
        "generate",
        "--model",
        "tiny-llama",
        "--input",
        str(t / "in.jsonl"),
        "--out",
        str(t / "out"),
    ],
    "serve unknown model": lambda t: ["serve", "--model", "no-org/no-model", "--port", "0"],
    "tokenizer missing corpus": lambda t: ["tokenizer", "train", str(t / "nope"), "--out", str(t / "out")],
    "run missing recipe": lambda t: ["run", str(t / "nope.yaml")],
    "run malformed yaml": lambda t: ["run", str(t / "bad.yaml")],
    "train infinite learning rate": lambda t: [
        "train", "--model", "tiny-llama", "--dataset", str(t), "--set", "lr=.inf", "--out", str(t / "out"),
    ],
    "tokenizer absurd vocab size": lambda t: [
        "tokenizer", "train", str(t / "corpus"), "--vocab-size", "10000000000", "--out", str(t / "out"),
    ],
    "score unknown style": lambda t: [
        "score", "--references", str(t / "bad.yaml"), "--predictions", str(t / "bad.yaml"), "--style", "bleu",
    ],
}  # fmt: skip
# What the line must say, where the case was once answered by a crash or a misleading list.
NEEDLES = {
    "train infinite learning rate": "lr: Input should be a finite number",
    "tokenizer absurd vocab size": "--vocab-size must be at most 1,048,576",
    "score unknown style": "codexglue-method, codexglue-line, humaneval-infilling",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    code, text = invoke(monkeypatch, capsys, *CASES[case](tmp_path))
    assert code != 0, text
    assert "Traceback" not in text
    assert "error" in text.lower(), text
    assert not (tmp_path / "out").exists(), f"{case} left output behind"
    assert NEEDLES.get(case, "") in text, text


# The other tests call the command line in process (tests/helpers/cli.py); each command's real entry
# point, `python -m codetune COMMAND` in a process of its own, answers its first bad-input case here.
FIRST_CASE_OF_EACH_COMMAND = sorted({name.split()[0]: name for name in sorted(CASES, reverse=True)}.values())


@pytest.mark.parametrize("case", FIRST_CASE_OF_EACH_COMMAND)
def test_each_command_as_a_process_answers_bad_input_with_one_line(case, tmp_path):
    from tests.helpers.cli import assert_clean_error, run_cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    (tmp_path / "corpus").mkdir()
    proc = run_cli(*CASES[case](tmp_path), process=True)
    assert_clean_error(proc, NEEDLES.get(case, ""))
    assert not (tmp_path / "out").exists(), f"{case} left output behind"


def test_help_lists_the_contract(monkeypatch, capsys):
    code, text = invoke(monkeypatch, capsys, "--help")
    assert code == 0
    for command in (
        "collect",
        "build",
        "train",
        "merge",
        "eval",
        "score",
        "generate",
        "serve",
        "run",
        "quickstart",
        "tokenizer",
    ):
        assert command in text


def _help_text(*command: str) -> str:
    """A command's help as a user's terminal shows it, wide enough that no line is wrapped or cut."""
    from tests.helpers.cli import run_cli

    proc = run_cli(*command, "--help", env={"COLUMNS": "1000"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_eval_help_lists_exactly_the_tasks_the_config_accepts():
    import re

    from codetune.errors import ConfigError
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.tasks import TASKS
    from codetune.evaluate.tasks.build import build_tasks

    text = _help_text("eval")
    listed = re.search(r"--task\s.*?Tasks to run, of: ([^(]*) \(", text).group(1).split(", ")
    assert set(listed) == set(TASKS) and len(listed) == len(TASKS)
    for name in listed:  # each one listed is accepted (tasks without inputs build to nothing)
        build_tasks(EvalConfig(tasks=[name], allow_execution=True), [], {})
    with pytest.raises(ConfigError, match="unknown task"):
        build_tasks(EvalConfig(tasks=["not-" + listed[0]]), [], {})


@pytest.mark.parametrize("stage", ["collect", "build", "train", "merge", "eval", "generate", "serve"])
def test_every_simple_config_field_is_an_option_of_its_command(stage):
    """The options are the config's fields: a field added to a config shows in the help, with its words."""
    from codetune.cli_options import option_type
    from codetune.stages import get_stage

    text = _help_text(stage)
    renamed = {"models": "model", "tasks": "task", "repos": "repo", "cors_origins": "cors-origin"}
    positional = {"sources", "corpus", "run"}
    for name, info in get_stage(stage).config_class.model_fields.items():
        if (
            option_type(info.annotation) is None
            or name in positional
            or (stage, name) in {("serve", "adapter")}
        ):
            continue
        flag = "--" + renamed.get(name, name).replace("_", "-")
        line = next((line for line in text.splitlines() if f" {flag} " in line), None)
        assert line is not None, (stage, flag)
        words = (info.description or "").split()[:3]
        assert all(word in line for word in words), (stage, flag, line)


def test_collect_help_lists_every_registered_language():
    """`codetune collect --help` names the languages a new user may pass to --language."""
    import re

    from tests.helpers.cli import run_cli

    from codetune.languages import language_names

    shown = run_cli("collect", "--help", env={"COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    known = re.search(r"Known: ([^.]*)\.", shown.stdout)
    assert known is not None, shown.stdout
    assert [name.strip() for name in known.group(1).split(",")] == language_names()
