"""`codetune build --format instruct` on rows whose fields are not text: never a Python repr in an
example; such rows, and rows whose fields are null or empty, are left out and counted in stats.json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli


def test_rows_without_text_are_counted_never_turned_into_reprs(tmp_path: Path) -> None:
    good = [{"instruction": f"Add {i} to x", "output": f"x + {i}"} for i in range(10)]
    odd = [
        {"instruction": ["Add", "one"], "output": "x + 1"},  # a list
        {"instruction": "Describe x", "output": {"type": "int"}},  # an object
        {"instruction": "Is x set?", "output": True},  # a boolean
        {"instruction": None, "output": "x"},  # null
        {"instruction": "Say nothing", "output": None},
        {"instruction": "Blank", "output": "   "},
        {"instruction": "Port of HTTP?", "output": 80, "input": ["ignored"]},  # a list as input
    ]
    numbers = [{"instruction": "Port of HTTPS?", "output": 443}]  # a number is its text
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*good, *odd, *numbers]))
    out = tmp_path / "ds"
    proc = run_cli(
        "build", str(path), "--format", "instruct", "--model", "tiny-gpt-bigcode", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"]["not_text"] == 4, stats["dropped"]
    assert stats["dropped"]["empty_pair"] == 3, stats["dropped"]
    from datasets import load_from_disk

    data = load_from_disk(str(out))
    rows = [row for split in data for row in data[split]]
    assert len(rows) == 11
    texts = " ".join(row["prompt"] + row["completion"] for row in rows)
    assert "['" not in texts and "{'" not in texts and "True" not in texts and "None" not in texts
    assert any(row["completion"] == "443" for row in rows)
