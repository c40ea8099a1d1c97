"""Issue 3's acceptance fixture: each file's outcome (kept, dropped with its reason, redacted) and the
manifest's counts, through the CLI as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codetune.artifacts import read_corpus

FIXTURE = Path(__file__).parent / "fixtures" / "tree"

# language -> (kept paths, {dropped path: reason}, redactions)
EXPECTED = {
    "elm": (["elm/src/Main.elm"], {"elm/mail.elm": "not_language"}, {}),
    "kotlin": (
        ["kotlin/Config.kt", "kotlin/Greeter.kt", "kotlin/Repo.kt"],
        {
            "kotlin/Strings.kt": "long_literal",
            "kotlin/copy/Repo.kt": "exact_duplicate",
            "kotlin/RepoNear.kt": "near_duplicate",
            "kotlin/Generated.kt": "generated",
            "kotlin/Junk.kt": "binary",
        },
        {"aws_key": 1, "email": 1},
    ),
    "javascript": (["js/app.js"], {"js/app.min.js": "minified"}, {}),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acceptance") / "tree"
    shutil.copytree(FIXTURE, root, symlinks=True)
    (root / "kotlin" / "loop").symlink_to(root / "kotlin", target_is_directory=True)
    return root


@pytest.mark.parametrize("language", sorted(EXPECTED))
def test_acceptance_fixture(tree, tmp_path, cli, language):
    kept, dropped, redactions = EXPECTED[language]
    out, rejected = tmp_path / "corpus", tmp_path / "rejected"
    proc = cli("collect", str(tree), "--language", language, "--out", str(out), "--rejected", str(rejected))
    assert proc.returncode == 0, proc.stderr
    rows = read_corpus(out)
    assert sorted(r["path"] for r in rows) == kept
    index = [json.loads(line) for line in (rejected / "rejected.jsonl").read_text().splitlines()]
    assert {e["path"]: e["reason"] for e in index} == dropped
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]["dropped"]
    expected_counts: dict[str, int] = {}
    for reason in dropped.values():
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    expected_counts["symlink_loop"] = 1  # kotlin/loop points back at its own folder
    assert {reason: entry["files"] for reason, entry in counts.items()} == expected_counts
    for path, reason in dropped.items():
        assert counts[reason]["bytes"] >= (tree / path).stat().st_size
    assert manifest["counts"]["kept"] == len(kept)
    assert manifest["totals"]["files_seen"] == len(kept) + sum(expected_counts.values())
    assert manifest["redactions"] == redactions
    for reason in expected_counts:
        assert f"dropped: {reason}" in proc.stderr  # the printed table
    content = {r["path"]: r["content"] for r in rows}
    if language == "kotlin":
        assert "AKIAIOSFODNN7EXAMPLE" not in content["kotlin/Config.kt"]
        assert "<KEY>" in content["kotlin/Config.kt"] and "user@example.com" in content["kotlin/Config.kt"]
        assert content["kotlin/Greeter.kt"].startswith("package demo.greeting")
        assert manifest["licence_stripped"] == 1
        assert (rejected / "binary").is_dir() and (rejected / "long_literal").is_dir()
    if language == "elm":
        assert content["elm/src/Main.elm"] == (tree / "elm/src/Main.elm").read_text()
        assert "elm-stuff" not in json.dumps(index)
