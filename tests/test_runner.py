"""`codetune run`: the whole chain from one YAML file, and skipping what has not changed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from codetune.runner import run_recipe


def make_project(root: Path, files: int = 14) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"module_{i}.py").write_text(
            textwrap.dedent(
                f'''\
                """Module {i}: small helpers."""


                def scale_{i}(values, factor={i + 1}):
                    result = []
                    for value in values:
                        result.append(value * factor + {i})
                    return result


                class Counter{i}:
                    def __init__(self):
                        self.count = {i}

                    def bump(self, step=1):
                        self.count += step
                        return self.count
                '''
            )
        )
    return src


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


def test_source_change_reruns_everything(tmp_path):
    src = make_project(tmp_path, files=12)
    recipe = write_recipe(tmp_path, src)
    run_recipe(recipe, stages=["collect", "build"])
    (src / "module_new.py").write_text("def added(a, b):\n    total = a + b\n    return total * 2\n")
    rerun = run_recipe(recipe, stages=["collect", "build"])
    assert [r.skipped for r in rerun] == [False, False]
