"""The quickstart's whole path, shrunk: pretrain (cached) -> collect -> build -> LoRA -> eval report."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.projects import make_project

from codetune.artifacts.dataset import read_dataset
from codetune.quickstart import QuickstartSettings, quickstart


def test_quickstart_path_writes_a_base_vs_tuned_report_and_reuses_the_base(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    general = make_project(tmp_path / "general", files=16)
    project = make_project(tmp_path / "project", files=12)
    settings = QuickstartSettings(
        pretrain_steps=2, adapt_steps=2, samples=4, max_length=64, pretrain_source=general
    )

    results = quickstart(source=project, out=tmp_path / "out", settings=settings)
    assert [r.stage for r in results] == ["collect", "build", "train", "collect", "build", "train", "eval"]
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
    assert all("edit_sim" in scores for scores in report["models"].values())
    assert "codetune serve --model" in capsys.readouterr().err
    # without --repo-context no example carries context (the contrast for the test below)
    assert read_dataset(tmp_path / "out" / "dataset").stats["repo_context"] == {"enabled": False}

    again = quickstart(source=project, out=tmp_path / "out2", settings=settings)
    assert [r.stage for r in again] == ["collect", "build", "train", "eval"]  # the pretrained base is reused


def chained_project(root: Path, files: int) -> Path:
    """Small modules, each calling a function the previous module defines (its context: that module)."""
    src = root / "app"
    src.mkdir(parents=True)
    (src / "stage_0.py").write_text("def stage_0(value):\n    return value + 1\n")
    for i in range(1, files):
        (src / f"stage_{i}.py").write_text(
            f"from stage_{i - 1} import stage_{i - 1}\n\n\n"
            f"def stage_{i}(value):\n    return stage_{i - 1}(value) * {i + 1}\n"
        )
    return src


def test_quickstart_with_repo_context_adapts_on_examples_that_carry_the_projects_other_files(
    tmp_path, monkeypatch, capsys
):
    from transformers import AutoTokenizer

    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    general = make_project(tmp_path / "general", files=16)
    project = chained_project(tmp_path / "project", files=12)
    settings = QuickstartSettings(
        pretrain_steps=2, adapt_steps=2, samples=4, max_length=256, pretrain_source=general, repo_context=True
    )
    budget = settings.repo_context_budget

    results = quickstart(source=project, out=tmp_path / "out", settings=settings)
    assert [r.stage for r in results][-4:] == ["collect", "build", "train", "eval"]
    assert "on examples with repository context" in capsys.readouterr().err
    dataset = read_dataset(tmp_path / "out" / "dataset")
    info = dataset.stats["repo_context"]
    assert info["enabled"] and info["budget_tokens"] == budget
    train = info["splits"]["train"]
    assert train["examples_with_context"] > 0
    assert 0 < train["mean_context_tokens"] <= budget
    # the adapted rows are laid out as serve lays out its context: tiny-gpt-bigcode's tokenizer has
    # StarCoder2's repository tokens, and only the context (no loss) precedes the file
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out" / "dataset" / "tokenizer"))
    repo_token = tokenizer.convert_tokens_to_ids("<repo_name>")
    rows = dataset.split("train")
    carrying = [row for row in rows if repo_token in row["input_ids"]]
    assert len(carrying) == train["examples_with_context"]
    for row in carrying:
        start = row["input_ids"].index(repo_token)
        assert row["loss_mask"][start] == 0
        assert "<file_sep>" in tokenizer.decode(row["input_ids"])
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
