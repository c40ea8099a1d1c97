"""`codetune train` refuses what would train on nothing or on garbage, with one `error:` line and
nothing written: a dataset made with another model's tokenizer, a packed row shorter than the
examples (batch_tokens=1), an absurd number of steps; a recipe with a number too long to read."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`codetune ARGS` in this process: (exit code, stderr)."""
    from codetune.cli import main

    monkeypatch.setattr(sys, "argv", ["codetune", *args])
    capsys.readouterr()  # what the test printed before (datasets' progress bars) is not the CLI's
    try:
        main()
    except SystemExit as exit_:
        return exit_.code or 0, capsys.readouterr().err
    return 0, capsys.readouterr().err


def assert_one_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def without_tokenizer(dataset: Path, folder: Path) -> Path:
    copy = Path(shutil.copytree(dataset, folder))
    shutil.rmtree(copy / "tokenizer")
    return copy


def test_a_dataset_made_with_another_tokenizer_is_refused(causal_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = cli(
        monkeypatch, capsys, "train", "-m", "tiny-gpt-bigcode", "-d", str(causal_dataset), "-o", str(out)
    )
    assert_one_error(code, err, "another tokenizer", "built for tiny-llama", "--model tiny-gpt-bigcode")
    assert not out.exists()


def test_without_its_tokenizer_ids_past_the_vocabulary_are_refused(
    causal_dataset, tmp_path, monkeypatch, capsys
):
    from datasets import load_from_disk

    dataset = without_tokenizer(causal_dataset, tmp_path / "copy")
    splits = load_from_disk(str(dataset))
    splits["train"] = splits["train"].map(
        lambda row, i: {"input_ids": [*row["input_ids"][:-1], 9999]} if i == 0 else row, with_indices=True
    )
    splits.save_to_disk(str(tmp_path / "edited"))
    shutil.copy(dataset / "stats.json", tmp_path / "edited" / "stats.json")
    out = tmp_path / "run"
    code, err = cli(
        monkeypatch, capsys, "train", "-m", "tiny-llama", "-d", str(tmp_path / "edited"), "-o", str(out)
    )
    assert_one_error(code, err, "token ids up to 9,999", "4,096 tokens", "tokenizer/ folder is missing")
    assert not out.exists()


def test_without_its_tokenizer_a_dataset_built_for_another_model_warns(
    causal_dataset, tmp_path, monkeypatch, capsys, caplog
):
    dataset = without_tokenizer(causal_dataset, tmp_path / "copy")
    args = [
        "train",
        "-m",
        "tiny-gpt-bigcode",
        "-d",
        str(dataset),
        "-o",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
    ]
    with caplog.at_level(logging.WARNING):
        code, err = cli(monkeypatch, capsys, *args, "--set", "batch_tokens=128", "--set", "eval_every=10")
    assert code == 0, err
    (warning,) = [r.getMessage() for r in caplog.records if "tokenizer/ folder is missing" in r.getMessage()]
    assert "built for tiny-llama" in warning and "tiny-gpt-bigcode" in warning


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("batch_tokens=1", ("batch_tokens 1 is shorter than the dataset's longest example (48 tokens)",)),
        ("pack_length=16", ("pack_length 16 is shorter", "at least 48")),
        ("max_steps=100000000000000000000000000000", ("max_steps", "less than or equal to 100000000")),
        ("max_steps=" + "9" * 5000, ("a number with 5,000 digits is too long",)),
        ("epochs=1e12", ("optimizer steps, more than 100,000,000",)),
    ],
    ids=["batch_tokens=1", "pack_length=16", "max_steps=1e29", "max_steps=5000 digits", "epochs=1e12"],
)
def test_settings_that_cannot_train_are_refused(
    causal_dataset, tmp_path, monkeypatch, capsys, setting, needles
):
    out = tmp_path / "run"
    args = ["train", "-m", "tiny-llama", "-d", str(causal_dataset), "-o", str(out), "--set", setting]
    assert_one_error(*cli(monkeypatch, capsys, *args), *needles)
    assert not out.exists()


def test_a_recipe_with_a_number_too_long_to_read(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  max_steps: 1" + "0" * 4400 + "\n")
    code, err = cli(monkeypatch, capsys, "run", str(recipe))
    assert_one_error(code, err, str(recipe), "number too long to read")
