"""The quickstart's whole path, shrunk: base (shipped, or pretrained and cached) -> collect -> build ->
LoRA -> eval report; and the shipped base checked against the recipe that made it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from tests.helpers.projects import make_project

from codetune.artifacts.dataset import read_dataset
from codetune.errors import InputError
from codetune.quickstart import QuickstartSettings, quickstart, serve_command
from codetune.quickstart.base import RECIPE_FILE, SHIPPED, BaseRecipe, check_base, rebuild

TINY = BaseRecipe(steps=2, batch_tokens=256, max_length=64)


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
    err = capsys.readouterr().err
    assert "serve --model" in err
    # the closing line times each stage (bench/quickstart.py reads it)
    assert "quickstart finished in " in err and "(base " in err and ", adapt " in err and ", eval " in err
    # without --repo-context no example carries context (the contrast for the test below)
    assert read_dataset(tmp_path / "out" / "dataset").stats["repo_context"] == {"enabled": False}

    again = quickstart(source=project, out=tmp_path / "out2", settings=settings)
    assert [r.stage for r in again] == ["collect", "build", "train", "eval"]  # the pretrained base is reused


def test_the_default_quickstart_adapts_the_shipped_base_without_pretraining(tmp_path, monkeypatch):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    project = make_project(tmp_path / "project", files=12)
    settings = QuickstartSettings(adapt_steps=2, samples=4)
    results = quickstart(source=project, out=tmp_path / "out", settings=settings)
    assert [r.stage for r in results] == ["collect", "build", "train", "eval"]
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    base = Path(report["sources"]["base"])
    assert base.parent == tmp_path / "cache" / "quickstart"  # the shipped fp16 weights, made fp32 once
    assert json.loads((base / "config.json").read_text())["n_embd"] == BaseRecipe().shape["n_embd"]
    assert "quickstart base" in (tmp_path / "out" / "report" / "report.md").read_text()  # said to be a toy


def test_quickstart_seed_reaches_the_lora_run_and_the_eval_draw(tmp_path, monkeypatch):
    """--seed changes the LoRA run and the eval's prompts, so a gain can be checked over seeds."""
    from tests.helpers.cli import run_cli

    from codetune.artifacts.manifest import read_manifest

    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    project = make_project(tmp_path / "project", files=12)
    out = tmp_path / "out"
    proc = run_cli(
        "quickstart",
        "--source",
        str(project),
        "--out",
        str(out),
        "--adapt-steps",
        "2",
        "--samples",
        "4",
        "--seed",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    assert read_manifest(out / "run")["config"]["seed"] == 3
    assert json.loads((out / "report" / "report.json").read_text())["settings"]["seed"] == 3


def test_the_shipped_base_matches_its_recipe_and_knows_python():
    """The artefact in the package: made by codetune's recipe (recipe.json, every file's SHA-256), of
    the recipe's shape, and pretrained: far below a random model's loss on code it never saw."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.modeling.presets import stdlib_dir

    info = check_base(SHIPPED)
    assert info["recipe"] == BaseRecipe().record()
    assert (
        info["recipe"]["held_out"] == "email" and "email/**" not in info["recipe"]["skip"]
    )  # held out apart
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 6_000_000, size  # a small artefact: a few MB
    model = AutoModelForCausalLM.from_pretrained(str(SHIPPED), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(SHIPPED))
    assert {k: getattr(model.config, k) for k in BaseRecipe().shape} == BaseRecipe().shape
    random = AutoModelForCausalLM.from_config(model.config)
    text = (stdlib_dir() / "email" / "_parseaddr.py").read_text()[2000:3000]  # the held-out package
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        trained, untrained = (float(m(ids, labels=ids).loss) for m in (model, random))
    assert untrained > 8 and trained < untrained - 2.5, (trained, untrained)  # perplexity 12x lower


def test_rebuild_writes_a_base_its_recipe_checks_and_a_changed_file_or_recipe_is_refused(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    general = make_project(tmp_path / "general", files=16)
    out = tmp_path / "base"
    rebuild(out, TINY, source=general, say=lambda text: None)
    info = check_base(out, TINY)
    assert set(info["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert info["result"]["steps"] == 2
    with pytest.raises(InputError, match="another recipe"):
        check_base(out, BaseRecipe())
    (out / "config.json").write_text((out / "config.json").read_text().replace("4", "5", 1))
    with pytest.raises(InputError, match=r"config\.json is missing or damaged"):
        check_base(out, TINY)
    rebuild(out, TINY, source=general, say=lambda text: None)  # over an earlier base: fine
    check_base(out, TINY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a quickstart base"):
        rebuild(mine, TINY, source=general, say=lambda text: None)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert RECIPE_FILE not in os.listdir(mine)


def test_the_closing_hint_names_a_command_that_works_where_codetune_is_not_on_path(tmp_path, monkeypatch):
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "codetune").write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert serve_command(Path("qs/run")) == ".venv/bin/codetune serve --model qs/run"
    monkeypatch.setenv("PATH", str(venv))  # an activated virtualenv
    (venv / "codetune").chmod(0o755)
    assert serve_command(Path("qs/run")) == "codetune serve --model qs/run"
    (venv / "codetune").unlink()  # no entry point at all (run from a source tree)
    assert serve_command(Path("qs/run")) == ".venv/bin/python -m codetune serve --model qs/run"


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


# Slow (a second whole quickstart): the default suite covers its parts, context rows in
# tests/dataset/test_repo_context.py and the quickstart's path in the tests above.
@pytest.mark.slow
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
