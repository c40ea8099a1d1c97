"""Recipe YAML that YAML itself accepts but that is wrong: duplicated keys, bad bytes, deep nesting.

Each is one `error:` line naming the problem, exit code 2, through `codetune run`.
"""

from __future__ import annotations

import pytest
from tests.helpers.cli import run_cli
from tests.helpers.recipes import RECIPE as BASE_RECIPE

from codetune.config import load_recipe, load_yaml
from codetune.errors import ConfigError

# A valid recipe, then its collect section a second time (line 15; the first is on line 4).
RECIPE = BASE_RECIPE + "collect:\n  sources: [other]\n  language: elm\n"


def assert_error_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_duplicated_top_level_key_names_its_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    with pytest.raises(ConfigError, match=r"line 15.*duplicate key 'collect' \(first given on line 4\)"):
        load_recipe(recipe)
    assert_error_line(run_cli("run", str(recipe), cwd=tmp_path), "duplicate key 'collect'", "line 15")


def test_duplicated_nested_key_is_an_error_but_merge_keys_still_work(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  lr: 0.1\n  epochs: 1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'lr' \(first given on line 2\)"):
        load_yaml(nested)
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &base {lr: 0.1, epochs: 1}\ntrain:\n  <<: *base\n  lr: 0.2\n")
    assert load_yaml(merged)["train"] == {"lr": 0.2, "epochs": 1}


def test_invalid_utf8_is_a_clear_error(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"name: demo\nworkdir: \xff\xfeout\n")
    assert_error_line(run_cli("run", str(recipe), cwd=tmp_path), "not UTF-8", "line 2")


@pytest.mark.parametrize("kind", ["flow", "block"])
def test_5000_deep_nesting_is_a_clear_error(tmp_path, kind):
    recipe = tmp_path / "recipe.yaml"
    if kind == "flow":
        recipe.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    else:
        recipe.write_text("name:\n  " + "- " * 5000 + "x\n")  # block sequences, one inside the other
    assert_error_line(run_cli("run", str(recipe), cwd=tmp_path), "nested too deeply")
