"""Long work shows progress where no terminal is: a plain line every CODETUNE_PROGRESS_SECONDS
(stage, done/total, rate, ETA) when stderr is a pipe or a file (codetune.progress)."""

from __future__ import annotations

import io
import re
import time

from tests.conftest import run_cli
from tests.test_runner import make_project

from codetune.progress import StepProgress, activity

PLAIN = re.compile(r"(?P<what>[\w ./-]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+)s \(\d+%\), (?P<rest>.*)")


def plain_lines(stderr: str, prefix: str) -> list[re.Match]:
    return [m for line in stderr.splitlines() if line.startswith(prefix) and (m := PLAIN.fullmatch(line))]


def test_collect_and_build_piped_print_counts_rates_and_etas(tmp_path):
    project = make_project(tmp_path / "project", files=30)
    env = {"CODETUNE_PROGRESS_SECONDS": "0"}
    collect = run_cli(
        "collect",
        str(project),
        "-l",
        "python",
        "-o",
        str(tmp_path / "corpus"),
        "--set",
        "chunk_size=10",
        env=env,
    )
    assert collect.returncode == 0, collect.stderr
    assert "\r" not in collect.stderr
    lines = plain_lines(collect.stderr, "collect ")
    assert [(m["done"], m["total"], m["unit"]) for m in lines[:3]] == [
        (str(n), "30", "file") for n in (10, 20, 30)
    ]
    assert re.search(r"files/s|s/file", lines[0]["rest"]) and "ETA" in lines[0]["rest"]
    assert lines[-1]["rest"].endswith("done")

    build = run_cli(
        "build", str(tmp_path / "corpus"), "-f", "files", "-m", "tiny-gpt-bigcode", "-o", str(tmp_path / "ds"),
        "--set", "fim_rate=0", env=env,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "\r" not in build.stderr  # datasets' own bars are off where no terminal is
    tokenized = plain_lines(build.stderr, "build tokenize train")
    assert tokenized and tokenized[-1]["unit"] == "example" and tokenized[-1]["rest"].endswith("done")
    assert plain_lines(build.stderr, "build files train")[-1]["unit"] == "document"


def test_a_line_only_every_interval(monkeypatch):
    monkeypatch.setenv("CODETUNE_PROGRESS_SECONDS", "0.2")
    stream = io.StringIO()
    with StepProgress("eval completion", 40, unit="prompt", stream=stream) as bar:
        for done in range(1, 41):
            time.sleep(0.025)
            bar.update(done, tokens=done * 10)
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 7, lines  # about 1 s of work at one line per 0.2 s, and the last
    assert all(line.startswith("eval completion: ") for line in lines)
    assert re.search(r"prompts/s, [\d,]+ tok/s, \d+s, ETA \d+s$", lines[0]), lines[0]
    assert lines[-1].startswith("eval completion: 40/40 prompts (100%)") and lines[-1].endswith("done")


def test_a_long_call_without_a_count_says_it_is_still_working_and_when_it_ended(monkeypatch):
    monkeypatch.setenv("CODETUNE_PROGRESS_SECONDS", "0.1")
    stream = io.StringIO()
    with activity("loading model big/model", stream=stream):
        time.sleep(0.35)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "loading model big/model: 0s"
    assert lines[-1] == "loading model big/model: done in 0s"
    quick = io.StringIO()
    with activity("loading model tiny", stream=quick):
        pass
    assert quick.getvalue() == ""  # nothing to say about a quick call
