from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.recipes import RECIPE

from codetune.config import load_recipe
from codetune.errors import ConfigError, InputError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_load_and_types(tmp_path):
    recipe = load_recipe(write(tmp_path, RECIPE))
    assert recipe.name == "demo"
    assert recipe.build.max_length == 256
    assert recipe.train.lr == pytest.approx(0.001)
    assert recipe.eval is None


def test_overrides_win_and_are_typed(tmp_path):
    recipe = load_recipe(write(tmp_path, RECIPE), ["train.lr=1e-4", "build.max_length=128", "eval.samples=5"])
    assert recipe.train.lr == pytest.approx(1e-4)
    assert recipe.build.max_length == 128
    assert recipe.eval.samples == 5


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        load_recipe(write(tmp_path, RECIPE + "  learning_rate: 3\n"))
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_recipe(write(tmp_path, RECIPE), ["trian.lr=1"])


def test_bad_value_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be a valid number"):
        load_recipe(write(tmp_path, RECIPE), ["train.lr=fast"])


def test_malformed_and_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed YAML.*line"):
        load_recipe(write(tmp_path, "train: {model: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_run_cli_reports_malformed_yaml(tmp_path):
    proc = run_cli("run", str(write(tmp_path, "build: [oops\n")), cwd=tmp_path)
    assert_clean_error(proc, "malformed YAML")
    assert not (tmp_path / "out").exists()


def test_run_cli_reports_unknown_key(tmp_path):
    proc = run_cli("run", str(write(tmp_path, "tarin: {}\n")), cwd=tmp_path)
    assert_clean_error(proc, "tarin: unknown key")
