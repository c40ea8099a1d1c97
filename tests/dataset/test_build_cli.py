"""`codetune build` from the shell: the common settings as flags, a hint towards --set for unknown
options, the summary on stderr, and no transformers warning for files that are split on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.dataset import corpus_rows, make_tokenizer, write_corpus


def codetune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "codetune", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def test_build_flags_and_a_clean_stdout(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", corpus_rows(repos=1, files_per_repo=4))
    tokenizer = make_tokenizer(tmp_path / "tok")
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    # A model maximum shorter than the files: build splits them on purpose, so no warning is due.
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 32}))
    result = codetune(
        "build",
        str(corpus),
        "--model",
        str(tokenizer),
        "--out",
        "ds",
        "--fim-rate",
        "1",
        "--fim-spm-rate",
        "0",
        "--max-length",
        "40",
        "--split-by",
        "file",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the summary goes to stderr, stdout stays free for data
    assert "build: done" in result.stderr and "train examples" in result.stderr
    assert "longer than the specified maximum" not in result.stderr, result.stderr
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["max_length"] == 40 and stats["split_by"] == "file"
    assert stats["fim"]["rate"] == 1.0 and stats["fim"]["spm_rate"] == 0.0
    assert stats["fim"]["realised_rate"] == 1.0 and stats["fim"]["spm"] == 0


def test_an_unknown_option_points_to_set(tmp_path: Path) -> None:
    for args, key in (
        (["build", "corpus", "--windows-stride", "4"], "--set windows_stride=VALUE"),
        # (every top-level config field is an option: --lora-r is one; a misspelt one is not)
        (
            ["train", "--model", "tiny-gpt-bigcode", "--dataset", "ds", "--lora-rank", "8"],
            "--set lora_rank=VALUE",
        ),
    ):
        result = codetune(*args, cwd=tmp_path)
        assert result.returncode == 2
        message = " ".join(result.stderr.replace("│", " ").split())
        assert f"No such option: {args[-2]}" in message and key in message, result.stderr
        assert "KEY=VALUE" in message and f"codetune {args[0]} --help" in message
