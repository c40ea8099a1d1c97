"""The collect stage end to end on local folders: output contract, errors, robustness, resume."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from tests.helpers.cli import assert_clean_error
from tests.helpers.collect import distinct_module, write

from codetune.artifacts import read_corpus
from codetune.collect.config import CollectConfig
from codetune.collect.pipeline import collect
from codetune.config import LanguageSpec
from codetune.errors import CodetuneError, InputError

PY = '''import os


def area(width, height):
    """Area of a rectangle."""
    return width * height


class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self):
        return "hello " + self.name + str({i})
'''


def cfg(tmp_path: Path, *sources: Path | str, **kw) -> CollectConfig:
    kw.setdefault("out", tmp_path / "corpus")
    return CollectConfig(sources=[str(s) for s in sources], **kw)


def test_cli_thin_path_writes_shards_and_manifest(tmp_path, cli):
    src = tmp_path / "src"
    for i in range(4):
        write(src, f"pkg/mod{i}.py", distinct_module(i))
    write(src, "README.md", "# not python\n")
    proc = cli("collect", str(src), "--language", "python", "--out", str(tmp_path / "corpus"))
    assert proc.returncode == 0, proc.stderr
    assert "files kept" in proc.stderr
    shards = sorted((tmp_path / "corpus").glob("data-*.parquet"))
    assert len(shards) == 1
    table = pq.read_table(shards[0])
    for column in ("path", "repo", "language", "content", "bytes", "lines", "sha256"):
        assert column in table.column_names
    rows = read_corpus(tmp_path / "corpus")
    assert sorted(r["path"] for r in rows) == [f"pkg/mod{i}.py" for i in range(4)]
    assert {r["language"] for r in rows} == {"python"} and {r["repo"] for r in rows} == {str(src)}
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == 4 and manifest["totals"]["files_seen"] == 4
    assert manifest["fingerprint"] and manifest["sources"][0]["kind"] == "local"
    # No stray temporary or work folders beside the corpus.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "src"]


def test_cli_bad_inputs_are_clean_errors(tmp_path, cli):
    src = tmp_path / "src"
    write(src, "a.py", distinct_module(1))
    missing = cli("collect", str(tmp_path / "nope"), "-l", "python", "-o", str(tmp_path / "c1"))
    assert_clean_error(missing, "source not found")
    unknown = cli("collect", str(src), "-l", "cobolx", "-o", str(tmp_path / "c2"))
    assert_clean_error(unknown, "unknown language 'cobolx'")
    nothing = cli("collect", str(src), "-l", "elm", "-o", str(tmp_path / "c3"))
    assert_clean_error(nothing, "no files of elm kept from")
    write(src, "b.py", "x = 1\n")
    small = cli(
        "collect",
        str(src / "b.py").replace("b.py", ""),
        "-l",
        "python",
        "-o",
        str(tmp_path / "c4"),
        "--set",
        "min_lines=1000",
    )
    assert_clean_error(small, "no files of python kept", "too_few_lines")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no corpus, no work folder left


def test_unknown_filter_and_threshold_are_config_errors(tmp_path):
    src = tmp_path / "src"
    write(src, "a.py", distinct_module(1))
    with pytest.raises(CodetuneError, match="unknown filter"):
        collect(cfg(tmp_path, src, filters=["empty", "nonsense"]))
    with pytest.raises(CodetuneError, match="unknown threshold"):
        collect(cfg(tmp_path, src, language_thresholds={"python": {"bogus": 1}}))


def test_robust_to_loops_binary_invalid_utf8_huge_and_empty_folders(tmp_path):
    src = tmp_path / "src"
    write(src, "ok.py", distinct_module(1))
    write(src, "bin.py", b"\x7fELF\x00\x00\x01\x02" * 100)
    # GBK bytes are not UTF-8 and read as Latin-1 they are mojibake: undecodable (Latin-1 itself is
    # converted: test_encodings_are_converted_and_counted).
    write(src, "gbk.py", "# 这是一个测试文件\nx = '你好世界'\nprint(x)\n".encode("gbk"))
    huge = src / "huge.py"
    with huge.open("wb") as handle:  # a sparse 100 MB file: never read whole
        handle.truncate(100 * 1024 * 1024)
    (src / "empty_dir" / "deeper").mkdir(parents=True)
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "self.py").symlink_to(src / "self.py")
    (src / "dangling.py").symlink_to(src / "missing.py")
    result = collect(cfg(tmp_path, src))
    manifest = json.loads((result.out / "manifest.json").read_text())
    dropped = manifest["counts"]["dropped"]
    assert dropped["binary"]["files"] == 1
    assert dropped["undecodable"]["files"] == 1
    assert dropped["too_large"] == {"files": 1, "bytes": 100 * 1024 * 1024}
    assert dropped["symlink_loop"]["files"] >= 2  # the folder loop and the self-link
    assert dropped["unreadable"]["files"] >= 1  # the dangling link
    assert [r["path"] for r in read_corpus(result.out)] == ["ok.py"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_counted(tmp_path):
    src = tmp_path / "src"
    write(src, "ok.py", distinct_module(1))
    secret = write(src, "locked.py", distinct_module(2))
    secret.chmod(0)
    try:
        result = collect(cfg(tmp_path, src))
    finally:
        secret.chmod(0o644)
    assert (
        json.loads((result.out / "manifest.json").read_text())["counts"]["dropped"]["unreadable"]["files"]
        == 1
    )


def test_skip_dirs_gitignore_include_exclude(tmp_path):
    src = tmp_path / "src"
    for rel in (
        "app/main.py",
        "node_modules/x.py",
        "build/lib.linux-x86_64-cpython-311/y.py",  # setuptools' output (hand-written build/: issue 29)
        ".git/z.py",
        "gen/out.py",
        "tests/test_a.py",
    ):
        write(src, rel, distinct_module(len(rel)))
    write(src, ".gitignore", "gen/\n")
    rows = read_corpus(collect(cfg(tmp_path, src)).out)
    assert sorted(r["path"] for r in rows) == ["app/main.py", "tests/test_a.py"]
    rows = read_corpus(collect(cfg(tmp_path, src, exclude=["tests/"], force=True)).out)
    assert [r["path"] for r in rows] == ["app/main.py"]
    rows = read_corpus(collect(cfg(tmp_path, src, include=["tests/*.py"], force=True)).out)
    assert [r["path"] for r in rows] == ["tests/test_a.py"]
    rows = read_corpus(collect(cfg(tmp_path, src, gitignore=False, force=True)).out)
    assert "gen/out.py" in {r["path"] for r in rows}


def test_parallel_matches_serial_and_rerun_is_skipped(tmp_path):
    src = tmp_path / "src"
    for i in range(40):
        write(src, f"m/{i:03d}.py", distinct_module(i))
    write(src, "m/dup.py", distinct_module(3))
    serial = collect(cfg(tmp_path, src, workers=1, out=tmp_path / "serial"))
    parallel = collect(cfg(tmp_path, src, workers=2, chunk_size=4, out=tmp_path / "parallel"))
    assert read_corpus(serial.out) == read_corpus(parallel.out)
    assert parallel.summary["files kept"] == 40
    again = collect(cfg(tmp_path, src, workers=2, chunk_size=4, out=tmp_path / "parallel"))
    assert again.skipped
    write(src, "m/new.py", distinct_module(99))
    changed = collect(cfg(tmp_path, src, workers=2, chunk_size=4, out=tmp_path / "parallel"))
    assert not changed.skipped and changed.summary["files kept"] == 41


def crash_in_second_source(tmp_path, monkeypatch) -> tuple[Any, list[str]]:
    """Two sources; a collect killed in the middle of the second one (the first one finished and saved
    for resuming). Returns the config to run again and the list of sources each later chunk came from."""
    from codetune.collect import pipeline

    first, second = tmp_path / "one", tmp_path / "two"
    for i in range(3):
        write(first, f"a{i}.py", distinct_module(i))
        write(second, f"b{i}.py", distinct_module(10 + i))
    real = pipeline._process_chunk
    calls: list[str] = []
    crash = [True]

    def flaky(chunk):
        calls.append(chunk[0][2])
        if chunk[0][2] == str(second) and crash:
            crash.pop()
            raise RuntimeError("killed")  # a kill in the middle of the second source
        return real(chunk)

    monkeypatch.setattr(pipeline, "_process_chunk", flaky)
    config = cfg(tmp_path, first, second, workers=1)
    with pytest.raises(RuntimeError, match="killed"):
        collect(config)
    calls.clear()
    return config, calls


def test_resumes_finished_sources_after_a_crash(tmp_path, monkeypatch):
    config, calls = crash_in_second_source(tmp_path, monkeypatch)
    assert not (tmp_path / "corpus").exists()  # no half corpus
    result = collect(config)
    assert calls == [str(tmp_path / "two")]  # the finished source was not processed again
    assert result.summary["files kept"] == 6
    assert not (tmp_path / ".corpus.work").exists()


class _Planted:
    """A pickle that writes a file when it is loaded (its __reduce__ calls Path.write_text)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_planted_resume_cache_never_runs_code(tmp_path, monkeypatch):
    """The work folder beside the output is not trusted: what is planted there is never unpickled."""
    import pickle

    config, calls = crash_in_second_source(tmp_path, monkeypatch)
    cached = [path for path in (tmp_path / ".corpus.work").iterdir() if path.is_file()]
    assert cached, "the finished first source was not saved for resuming"
    marker = tmp_path / "pwned"
    for path in cached:  # an attacker who can write the work folder replaces the cache
        path.write_bytes(pickle.dumps(_Planted(marker)))
    result = collect(config)
    assert not marker.exists(), "a planted resume file ran code"
    assert result.summary["files kept"] == 6
    assert str(tmp_path / "one") in calls  # the planted file was ignored: that source processed again


def test_rejected_folder_holds_dropped_files_with_reasons(tmp_path):
    src = tmp_path / "src"
    write(src, "good.py", distinct_module(1))
    write(src, "copy.py", distinct_module(1))
    write(src, "gen.py", "# Code generated by protoc. DO NOT EDIT.\n" + distinct_module(5))
    result = collect(cfg(tmp_path, src, rejected=tmp_path / "rejected"))
    index = [json.loads(line) for line in (tmp_path / "rejected" / "rejected.jsonl").read_text().splitlines()]
    by_path = {entry["path"]: entry for entry in index}
    assert by_path["gen.py"]["reason"] == "generated"
    assert (
        by_path["good.py"]["reason"] == "exact_duplicate"
        and by_path["good.py"]["duplicate_of"] == f"{src}/copy.py"
    )
    assert (tmp_path / "rejected" / by_path["gen.py"]["file"]).read_text().startswith("# Code generated")
    assert [r["path"] for r in read_corpus(result.out)] == ["copy.py"]


def test_recipe_language_spec_is_honoured(tmp_path):
    src = tmp_path / "src"
    write(
        src,
        "a.air2",
        "function add(a, b) {\n  return a + b;\n}\nfunction twice(x) {\n  return add(x, x);\n}\n",
    )
    write(src, "mail.air2", "Hello team,\nplease find the report attached, thanks!\nBob\n")
    spec = LanguageSpec(name="airscript2", extensions=[".air2"], grammar="javascript", line_comment="//")
    result = collect(cfg(tmp_path, src, language="airscript2", languages=[spec], workers=1))
    assert [r["path"] for r in read_corpus(result.out)] == ["a.air2"]
    assert result.summary["dropped: not_language"].startswith("1 files")


def test_read_corpus_rejects_non_corpus(tmp_path):
    with pytest.raises(InputError, match="not a corpus folder"):
        read_corpus(tmp_path)


def test_rejected_copies_hold_the_original_file_and_reruns_still_write_them(tmp_path, cli):
    src = tmp_path / "src"
    write(src, "good.py", distinct_module(1))
    header = "# Copyright (c) 2020 Example Corp.\n# Licensed under the MIT License.\n"
    write(src, "only_header.py", header)  # nothing but a licence comment: empty once stripped
    original = (header + "x = 1\r\n").encode()
    write(src, "short.py", original)  # CRLF and a licence: dropped as too_few_lines
    config = cfg(tmp_path, src, rejected=tmp_path / "rejected")
    collect(config)
    index = {
        e["path"]: e
        for e in map(json.loads, (tmp_path / "rejected" / "rejected.jsonl").read_text().splitlines())
    }
    assert (tmp_path / "rejected" / index["only_header.py"]["file"]).read_text() == header
    assert (tmp_path / "rejected" / index["short.py"]["file"]).read_bytes() == original
    # The corpus is unchanged, but a new --rejected folder is asked for: it is written, and said so.
    again = cli(
        "collect",
        str(src),
        "-l",
        "python",
        "-o",
        str(tmp_path / "corpus"),
        "--rejected",
        str(tmp_path / "r2"),
    )
    assert again.returncode == 0, again.stderr
    assert "--rejected" in again.stderr
    assert (tmp_path / "r2" / "rejected.jsonl").read_text() == (
        tmp_path / "rejected" / "rejected.jsonl"
    ).read_text()
    skipped = collect(cfg(tmp_path, src, rejected=tmp_path / "r2"))
    assert skipped.skipped and skipped.summary["rejected"] == f"{tmp_path / 'r2'} (unchanged)"


SLOW_COLLECT = """
import sys, time
from codetune.collect import pipeline
from codetune.collect.config import CollectConfig
real = pipeline.process_file
def slow(*args):
    time.sleep(0.2)
    return real(*args)
pipeline.process_file = slow
pipeline.collect(CollectConfig(sources=[sys.argv[1]], out=sys.argv[2], workers=2, chunk_size=1))
"""


def test_kill_9_of_collect_leaves_no_worker_processes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    src = tmp_path / "src"
    for i in range(200):
        write(src, f"m{i:03d}.py", distinct_module(i))
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_COLLECT, str(src), str(tmp_path / "corpus")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    workers: list[psutil.Process] = []
    try:
        deadline = time.time() + 120
        parent = psutil.Process(proc.pid)
        while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(psutil.Error):  # forked workers share the parent's command line
                command = parent.cmdline()
                workers = [p for p in parent.children(recursive=True) if p.cmdline() == command]
        assert len(workers) >= 2, "collect never started its workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"workers outlived collect: {[p.pid for p in alive]}"
    finally:
        for worker in workers:  # never leave them behind, even when the test fails
            with contextlib.suppress(psutil.Error):
                worker.kill()
        if proc.poll() is None:
            proc.kill()
