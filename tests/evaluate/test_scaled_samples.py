"""Without --samples, eval's prompts per task scale with the held-out files, and it says so."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.test_runner import make_project

from codetune.artifacts.dataset import read_dataset


def test_default_prompts_scale_with_the_held_out_files_and_the_report_says_how(tmp_path):
    project = make_project(tmp_path / "project", files=20)
    assert run_cli("collect", str(project), "-l", "python", "-o", str(tmp_path / "corpus")).returncode == 0
    built = run_cli(
        "build", str(tmp_path / "corpus"), "-f", "files", "-m", "tiny-gpt-bigcode", "-o", str(tmp_path / "ds"),
        "--set", "fim_rate=0", "--set", "test_fraction=0.25", "--set", "split_by=file",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    done = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "-d", str(tmp_path / "ds"), "-o", str(tmp_path / "report"),
        "--set", "tasks=[completion]", "--set", "max_new_tokens=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    files = len({row["path"] for row in read_dataset(tmp_path / "ds").split("test")})
    assert 3 <= files <= 7  # about a quarter of 20
    expected = max(24, 8 * files)
    assert report["settings"]["samples"] == expected
    rule = f"{expected} prompts per task: 8 per held-out file ({files}), at least 24 and at most 200"
    assert f"eval: {rule}" in done.stderr
    assert rule in (tmp_path / "report" / "report.md").read_text()
    given = run_cli(
        "eval", "-m", "tiny-gpt-bigcode", "-d", str(tmp_path / "ds"), "-o", str(tmp_path / "report2"),
        "--samples", "7", "--set", "tasks=[completion]", "--set", "max_new_tokens=2",
    )  # fmt: skip
    assert json.loads((tmp_path / "report2" / "report.json").read_text())["settings"]["samples"] == 7
    assert "prompts per task" not in given.stderr
