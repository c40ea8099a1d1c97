"""A file whose name is not UTF-8 (bytes a corpus cannot store as text) is left out and counted, in a
plain folder, a git work tree and a tar alike; everything else is collected."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from test_collect_pipeline import distinct_module
from tests.helpers.cli import run_cli

from codetune.artifacts import read_corpus

BAD = b"caf\xe9.py"  # Latin-1, as an old archive or file system would write it


def make_folder(root: Path, first: int) -> Path:
    os.makedirs(root, exist_ok=True)
    Path(root, "ok.py").write_text(distinct_module(first))
    with open(os.path.join(os.fsencode(root), BAD), "w") as handle:
        handle.write(distinct_module(first + 1))
    return root


def test_names_that_are_not_utf8_are_counted_and_the_rest_collected(tmp_path):
    folder = make_folder(tmp_path / "folder", 1)
    repo = make_folder(tmp_path / "repo", 3)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "files"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    tar_path = tmp_path / "names.tar"
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, text in (
            ("lib/ok.py", distinct_module(5)),
            (os.fsdecode(b"lib/" + BAD), distinct_module(6)),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out = tmp_path / "corpus"
    proc = run_cli(
        "collect", str(folder), str(repo), str(tar_path), "-l", "python", "-o", str(out),
        "--set", f"cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["path"] for r in read_corpus(out)) == ["lib/ok.py", "ok.py", "ok.py"]
    dropped = json.loads((out / "manifest.json").read_text())["counts"]["dropped"]
    assert dropped["name_not_utf8"]["files"] == 3, dropped
