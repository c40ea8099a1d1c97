"""End to end on tiny models: a dataset in the build contract, a run folder from `codetune train`,
then `evaluate` writes a report with base and tuned columns, per-prompt rows, a sweep and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli
from tests.helpers.evaluate import make_dataset
from tests.helpers.threads import threads_per_worker

from codetune.evaluate.config import EvalConfig
from codetune.evaluate.runner import evaluate


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    torch.set_num_threads(threads_per_worker())
    root = tmp_path_factory.mktemp("eval-e2e")
    dataset = make_dataset(root / "dataset")
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    run = root / "run"
    train(
        TrainConfig(
            model="tiny-gpt-bigcode", dataset=dataset, out=run, max_steps=2, eval_every=1, save_every=50
        )
    )
    prompts = root / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "def square(x):\n"}, {"prompt": "class Point:\n"}]))
    bench = root / "codexglue-line.json"
    bench.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in [
                {"input": "<s> def f ( x ) : <EOL> <INDENT> y = x + <NUM_LIT>", "gt": "return y"},
                {"input": "<s> import os <EOL> path = os . getcwd ( )", "gt": "print ( path )"},
            ]
        )
    )
    problems = root / "problems.jsonl"
    problems.write_text(
        json.dumps(
            {
                "task_id": "t/0",
                "prompt": "def one():\n",
                "test": "def check(f):\n    assert f() == 1\n",
                "entry_point": "one",
                "stop_tokens": ["\ndef "],
            }
        )
        + "\n"
    )
    return {
        "root": root,
        "dataset": dataset,
        "run": run,
        "prompts": prompts,
        "bench": bench,
        "problems": problems,
    }


def test_report_base_vs_tuned(workspace):
    out = workspace["root"] / "report"
    cfg = EvalConfig(
        models=["base=tiny-gpt-bigcode", f"tuned={workspace['run']}"],
        dataset=workspace["dataset"],
        out=out,
        samples=3,
        max_new_tokens=6,
        batch_size=4,
        tasks=["completion", "fim", "loss"],
        prompts=workspace["prompts"],
        n=2,
        language="python",
        benchmark=workspace["bench"],
        problems=workspace["problems"],
        allow_execution=True,
        k=[1, 2],
        sweep_temperature=[0.8],
        sweep_top_p=[0.9, 1.0],
    )
    result = evaluate(cfg)
    assert result.out == out
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["base", "tuned"]
    for scores in report["models"].values():
        for key in (
            "exact_match",
            "edit_sim",
            "bleu",
            "sacrebleu_bleu",
            "chrf",
            "loss",
            "perplexity",
            "fim_exact_match",
            "prompts_syntax_valid",
            "prompts_syntax_valid_truncated",
            "benchmark_edit_sim",
            "execution_pass@1",
            "execution_pass@2",
        ):
            assert key in scores, key
        assert 0 <= scores["edit_sim"] <= 100 and scores["loss"] > 0
    # the adapter changes the model: different loss on the same tokens
    assert report["models"]["base"]["loss"] != report["models"]["tuned"]["loss"]
    assert report["settings"]["decoding"] == "greedy" and report["settings"]["max_new_tokens"] == 6
    assert report["dataset"]["hash"] == "test-dataset-hash"
    per_prompt = [r for r in report["rows"] if r["task"] == "prompts"]
    assert len(per_prompt) == 4 and all(r["successes"] + r["fails"] == 2 for r in per_prompt)
    completions = [r for r in report["rows"] if r["task"] == "completion"]
    assert len(completions) == 6 and all("\n" not in r["prediction"] for r in completions)
    assert [(r["model"], r["top_p"]) for r in report["sweep"]] == [
        ("base", 0.9),
        ("base", 1.0),
        ("tuned", 0.9),
        ("tuned", 1.0),
    ]
    assert report["plots"] == ["metrics.png", "loss.png"]
    for png in ("metrics.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| metric | base | tuned |" in md and "greedy decoding" in md and "## Sampling sweep" in md
    assert "### Sample 0" in md and "**tuned**" in md
    assert json.loads((out / "manifest.json").read_text())["fingerprint"]


def test_cli_errors(workspace, tmp_path):
    missing = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "-d", str(tmp_path / "nope"), "-o", str(tmp_path / "r")
    )
    assert missing.returncode == 2 and "dataset folder not found" in missing.stderr
    no_exec = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "--problems", str(workspace["problems"]), "-o", str(tmp_path / "r")
    )
    assert no_exec.returncode == 2 and "--allow-execution" in no_exec.stderr
    no_language = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "--prompts", str(workspace["prompts"]), "-o", str(tmp_path / "r")
    )
    assert no_language.returncode == 2 and "needs a language" in no_language.stderr
    assert not (tmp_path / "r").exists()
