"""eval without and with repository context: editor replay over a dataset's repositories and CrossCodeEval's
own retrieved chunks, both result sets and their difference in report.json and report.md, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli

BILLING = "def compute_total(items, rate):\n    subtotal = sum(items)\n    return subtotal * rate\n"
APP = (
    "from pkg.billing import compute_total\n\n\ndef invoice(items):\n"
    "    value = compute_total(items, 2)\n    print('invoice', value)\n    return value\n"
)
OTHER = "def compute_total(rows):\n    return len(rows)  # another repository\n"


def make_dataset(folder: Path) -> Path:
    """A dataset folder as `codetune build` writes it: the held-out app.py calls a function defined in
    billing.py, a train file of the same repository; another repository defines the same name."""
    from datasets import Dataset, DatasetDict

    train = [
        {"repo": "shop", "path": "pkg/billing.py", "text": BILLING},
        {"repo": "elsewhere", "path": "other/only_here.py", "text": OTHER},
    ]
    test = [
        {"repo": "shop", "path": "pkg/app.py", "text": APP},
        {
            "repo": "elsewhere",
            "path": "other/use.py",
            "text": "from only_here import compute_total\n\nn = compute_total([1])\n",
        },
    ]
    DatasetDict(
        {
            "train": Dataset.from_list(train),
            "valid": Dataset.from_list(train[:1]),
            "test": Dataset.from_list(test),
        }
    ).save_to_disk(str(folder))
    stats = {"format": "files", "kind": "causal", "model": "tiny-gpt-bigcode", "max_length": 256}
    (folder / "stats.json").write_text(json.dumps(stats))
    (folder / "manifest.json").write_text(json.dumps({"fingerprint": "context-dataset"}))
    return folder


def crosscodeeval_file(path: Path) -> Path:
    rows = [
        {
            "prompt": f"from util import scale_{i}\n\nvalue = ",
            "groundtruth": f"scale_{i}(3)",
            "right_context": "\nprint(value)\n",
            "metadata": {
                "task_id": f"project_cc_python/{i}",
                "repository": "r",
                "file": "main.py",
                "context_start_lineno": 0,
                "groundtruth_start_lineno": 2,
                "right_context_start_lineno": 3,
            },
            "crossfile_context": {
                "text": f"# the below code fragment can be found in:\n# util.py\n# def scale_{i}(x):\n",
                "list": [
                    {
                        "retrieved_chunk": f"def scale_{i}(x):\n    return x * {i}\n",
                        "filename": "util.py",
                        "score": 0.9,
                    },
                    {"retrieved_chunk": "   \n", "filename": "blank.py", "score": 0.1},
                ],
            },
        }
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_eval_runs_editor_and_crosscodeeval_without_and_with_context(tmp_path: Path):
    dataset = make_dataset(tmp_path / "dataset")
    cce = crosscodeeval_file(tmp_path / "line_completion_rg1_bm25.jsonl")
    out = tmp_path / "report"
    result = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "-d", str(dataset), "--task", "editor", "--max-new-tokens", "4",
        "--set", "samples=8", "--set", f"crosscodeeval={cce}", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"editor", "editor_context", "crosscodeeval", "crosscodeeval_context"} <= set(report["tasks"])
    for task, baseline in (("editor_context", "editor"), ("crosscodeeval_context", "crosscodeeval")):
        assert report["context"][task]["without"] == baseline
        deltas = report["context"][task]["models"]["tiny-gpt-bigcode"]
        without = report["tasks"][baseline]["models"]["tiny-gpt-bigcode"]
        with_ = report["tasks"][task]["models"]["tiny-gpt-bigcode"]
        assert {"first_line_exact_match", "edit_sim", "identifier_em"} <= set(deltas)
        for metric, values in deltas.items():
            assert values["without"] == without[metric] and values["with"] == with_[metric]
            assert values["delta"] == round(with_[metric] - without[metric], 4)
        # the same cursors both ways
        assert report["tasks"][task]["prompts"] == report["tasks"][baseline]["prompts"]

    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    editor = [p for p in predictions if p["task"] == "editor_context"]
    app = [p for p in editor if "def invoice" in p["prefix"]]
    # cursors of app.py get billing.py (a train file of their repository); no cursor gets its own
    # file or a file of another repository
    assert app and all("pkg/billing.py" in p["context"] for p in app)
    for p in editor:
        own = "pkg/app.py" if p["prefix"].startswith("from pkg.billing") else "other/use.py"
        assert own not in p["context"]
        allowed = {"pkg/billing.py"} if own == "pkg/app.py" else {"other/only_here.py"}
        assert set(p["context"]) <= allowed
    assert all("context" not in p for p in predictions if p["task"] in ("editor", "crosscodeeval"))
    # CrossCodeEval's own chunks are the context (blank chunks dropped)
    cce_rows = [p for p in predictions if p["task"] == "crosscodeeval_context"]
    assert len(cce_rows) == 3 and all(p["context"] == ["util.py"] for p in cce_rows)

    markdown = (out / "report.md").read_text()
    assert "## With and without repository context" in markdown
    assert (
        "`editor` -> `editor_context`" in markdown
        and "`crosscodeeval` -> `crosscodeeval_context`" in markdown
    )


def test_context_without_runs_only_the_plain_tasks(tmp_path: Path):
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.tasks.build import build_tasks

    cce = crosscodeeval_file(tmp_path / "cce.jsonl")
    rows = [{"repo": "shop", "path": "pkg/app.py", "text": APP}]
    for mode, names in (
        ("without", ["editor", "crosscodeeval"]),
        # one file in the repository: no context to give, so the editor task runs without
        ("with", ["editor", "crosscodeeval_context"]),
        ("both", ["editor", "crosscodeeval", "crosscodeeval_context"]),
    ):
        cfg = EvalConfig(models=["m"], tasks=["editor"], crosscodeeval=cce, context=mode, samples=4)
        tasks = build_tasks(cfg, rows, {})
        assert [t.name for t in tasks] == names
