"""Near-duplicate removal through `codetune collect`: renamed-identifier twins at Jaccard 0.75-0.80
(where bigcode's plain LSH misses about one pair in four) are found, files without a twin stay."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.helpers.cli import run_cli

from codetune import textsim
from codetune.artifacts import read_corpus

PAIRS = 40


def kotlin_file(rng: random.Random, index: int) -> str:
    names = [
        f"{rng.choice(['load', 'save', 'find', 'send'])}{rng.choice(['User', 'Item', 'Node'])}{i}"
        for i in range(60)
    ]
    rng.shuffle(names)
    body = [f"package gen.p{index}\n"]
    for f in range(12):
        a, b, c, d = (names[(f * 4 + k) % len(names)] for k in range(4))
        body.append(
            f"fun {a}({b}: Int): Int {{\n    val {c} = {d}({b}) + {rng.randrange(100)}\n    return {c}\n}}\n"
        )
    return "\n".join(body)


def renamed(rng: random.Random, text: str, low: float, high: float) -> str:
    """Rename identifiers (one at a time) until the shingle Jaccard falls in [low, high]."""
    names = sorted({w for w in textsim.words(text) if w[0].isalpha() and w[-1].isdigit() and len(w) > 3})
    for _ in range(50):  # each rename drops the similarity a few points: retry orders until one lands
        rng.shuffle(names)
        twin = text
        for name in names:
            twin = twin.replace(name, f"renamed{rng.randrange(10**6)}")
            similarity = textsim.text_jaccard(text, twin)
            if low <= similarity <= high:
                return twin
            if similarity < low:
                break
    raise AssertionError("no rename landed in range; change the seed")


def test_renamed_twins_found_and_files_without_twins_kept(tmp_path: Path) -> None:
    rng = random.Random(7)
    root = tmp_path / "repo"
    root.mkdir()
    twins, loners = [], []
    for i in range(PAIRS):
        base = kotlin_file(rng, i)
        (root / f"a{i}.kt").write_text(base)
        (root / f"b{i}.kt").write_text(renamed(rng, base, 0.75, 0.80))
        twins.append((f"a{i}.kt", f"b{i}.kt"))
    for i in range(10):  # loose relatives (Jaccard 0.45-0.65): no twin, both must stay
        base = kotlin_file(rng, 100 + i)
        (root / f"c{i}.kt").write_text(base)
        (root / f"d{i}.kt").write_text(renamed(rng, base, 0.45, 0.65))
        loners += [f"c{i}.kt", f"d{i}.kt"]
    out, rejected = tmp_path / "corpus", tmp_path / "rejected"
    proc = run_cli(
        "collect", str(root), "--language", "kotlin", "--out", str(out), "--rejected", str(rejected)
    )
    assert proc.returncode == 0, proc.stderr
    kept = {row["path"] for row in read_corpus(out)}
    found = sum(1 for a, b in twins if (a in kept) != (b in kept))
    assert found >= 0.98 * PAIRS, f"{found} of {PAIRS} twin pairs reduced to one file"
    assert set(loners) <= kept
    for line in (rejected / "rejected.jsonl").read_text().splitlines():
        entry = json.loads(line)
        assert entry["reason"] == "near_duplicate", entry
        twin = entry["duplicate_of"].rsplit("/", 1)[1]  # the fixture files sit at the root
        assert textsim.text_jaccard((root / entry["path"]).read_text(), (root / twin).read_text()) >= 0.7


def test_a_bundle_of_the_modules_is_dropped_and_the_modules_kept(tmp_path: Path) -> None:
    rng = random.Random(3)
    root = tmp_path / "repo"
    modules = {}
    for i in range(6):
        name = f"part{i}"
        body = "\n".join(
            f"export function {name}Step{k}(input) {{\n"
            + "".join(f"  const v{j} = helper{rng.randrange(10**6)}(input, {j});\n" for j in range(6))
            + "  return v0 + v5;\n}\n"
            for k in range(12)
        )
        modules[f"modules/{name}.js"] = body
    # What a bundler writes without a source map: every module, exports rewritten, one file.
    bundle = "(function (root) {\n" + "\n".join(
        t.replace("export function", "function") for t in modules.values()
    )
    bundle += "\nroot.lib = {};\n})(this);\n"
    for rel, text in {**modules, "lib.js": bundle}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    out, rejected = tmp_path / "corpus", tmp_path / "rejected"
    proc = run_cli(
        "collect", str(root), "--language", "javascript", "--out", str(out), "--rejected", str(rejected)
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(row["path"] for row in read_corpus(out)) == sorted(modules)
    index = [json.loads(line) for line in (rejected / "rejected.jsonl").read_text().splitlines()]
    assert [(e["path"], e["reason"]) for e in index] == [("lib.js", "bundle")]
