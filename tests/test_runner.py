"""`codetune run`: the whole chain from one YAML file, and skipping what has not changed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from tests.helpers.projects import make_project

from codetune.errors import ConfigError
from codetune.runner import run_recipe
from codetune.schema import StrictModel
from codetune.stage import StageResult


def write_recipe(root: Path, src: Path) -> Path:
    recipe = root / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            # codetune run recipe.yaml
            name: runner-test
            workdir: {root / "work"}
            collect:
              sources: [{src}]
              language: python
            build:
              format: files
              model: tiny-llama
              max_length: 64
              fim_rate: 0.0
              valid_fraction: 0.15
              test_fraction: 0.15
            train:
              model: tiny-llama
              method: lora
              max_steps: 2
              batch_tokens: 256
              eval_every: 2
            eval:
              samples: 4
              max_new_tokens: 4
              tasks: [completion]
            """
        )
    )
    return recipe


def test_run_chains_stages_and_skips_unchanged(tmp_path):
    recipe = write_recipe(tmp_path, make_project(tmp_path))
    first = run_recipe(recipe)
    assert [r.stage for r in first] == ["collect", "build", "train", "eval"]
    assert not any(r.skipped for r in first)
    work = tmp_path / "work"
    report = json.loads((work / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
    assert (work / "run" / "adapter" / "adapter_config.json").is_file()

    again = run_recipe(recipe)
    assert [r.skipped for r in again] == [True, True, True, True]

    changed = run_recipe(recipe, overrides=["train.lr=0.001"])
    assert [r.stage for r in changed if not r.skipped] == ["train", "eval"]

    only_eval = run_recipe(recipe, overrides=["train.lr=0.001"], stages=["eval"], force=True)
    assert [(r.stage, r.skipped) for r in only_eval] == [("eval", False)]


def test_a_stage_run_alone_reruns_when_its_input_was_remade_or_removed(tmp_path):
    """`--stages train` after `--stages build` remade the dataset with other settings trains again."""
    from codetune.artifacts import manifest_path

    recipe = write_recipe(tmp_path, make_project(tmp_path))
    run_recipe(recipe, stages=["collect", "build", "train"])
    assert [r.skipped for r in run_recipe(recipe, stages=["train"])] == [True]
    remade = ["build.max_length=48"]
    assert [r.skipped for r in run_recipe(recipe, overrides=remade, stages=["build"])] == [False]
    [train] = run_recipe(recipe, overrides=remade, stages=["train"])
    assert not train.skipped
    assert [r.skipped for r in run_recipe(recipe, overrides=remade, stages=["train"])] == [True]
    manifest_path(tmp_path / "work" / "dataset").unlink()  # no record of what made the input
    [train] = run_recipe(recipe, overrides=remade, stages=["train"])
    assert not train.skipped


def test_source_change_reruns_everything(tmp_path):
    src = make_project(tmp_path, files=12)
    recipe = write_recipe(tmp_path, src)
    run_recipe(recipe, stages=["collect", "build"])
    (src / "module_new.py").write_text("def added(a, b):\n    total = a + b\n    return total * 2\n")
    rerun = run_recipe(recipe, stages=["collect", "build"])
    assert [r.skipped for r in rerun] == [False, False]


# A stage added by one registry entry: its config class and run function live here.
class NoteConfig(StrictModel):
    """Write a note next to the dataset (a stage that exists only in this test)."""

    dataset: Path | None = None
    out: Path | None = None
    text: str = "hello"


def write_note(cfg: NoteConfig) -> StageResult:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "note.txt").write_text(f"{cfg.text} {Path(cfg.dataset).name}")
    return StageResult("note", out, {"text": cfg.text})


def test_one_registry_entry_adds_a_stage_to_recipe_runner_and_reference(tmp_path, monkeypatch):
    from codetune import stages
    from codetune.config import load_recipe
    from codetune.reference import render_recipe_reference

    note = stages.Stage(
        "note",
        f"{__name__}:NoteConfig",
        f"{__name__}:write_note",
        reads=(stages.Input("dataset", ("dataset",)),),
        writes="note",
        out_name="note",
    )
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:2], note, *stages.STAGES[2:]))
    src = make_project(tmp_path / "project")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: noted\nworkdir: {tmp_path / 'work'}\n"
        f"collect: {{sources: [{src}], language: python, workers: 1}}\n"
        "build: {model: tiny-gpt-bigcode, max_length: 64, num_proc: 1}\n"
        "note: {text: built}\n"
    )
    assert load_recipe(recipe).note.text == "built"
    assert "## `note`" in render_recipe_reference()
    results = run_recipe(recipe)
    assert [r.stage for r in results] == ["collect", "build", "note"]
    # wired from the registry: the note read the build stage's dataset and wrote under the workdir
    assert (tmp_path / "work" / "note" / "note.txt").read_text() == "built dataset"
    again = run_recipe(recipe)
    assert [r.skipped for r in again] == [True, True, True]  # fingerprints cover the new stage too
    with pytest.raises(ConfigError, match="stages are: collect, build, note, train"):
        run_recipe(recipe, stages=["nope"])


def test_stage_configs_do_not_import_the_recipe_module():
    """Stage configs depend on codetune.schema only; codetune.config is built from the stages."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import codetune.collect.config, codetune.dataset.config, codetune.train.config\n"
        "import codetune.evaluate.config, codetune.generation.config, codetune.serve.config\n"
        "print('codetune.config' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from codetune.config import StrictModel as Old
    from codetune.schema import StrictModel as New

    assert Old is New  # the old import path still works for code not yet moved
