"""Editor replay: cursor kinds, the metrics of what an editor shows, and the task end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetune.evaluate.metrics import (
    accepted,
    accepted_chars,
    empty_rate,
    first_line_exact_match,
    identifier_em,
    identifier_f1,
    identifiers,
)
from codetune.evaluate.tasks.editor import cursor_positions

SOURCE = "def area(width, height):\n    size = width * height\n    return size\n"


def test_cursor_kinds_sit_where_an_editor_triggers():
    found = {(kind, SOURCE[:at][-6:], SOURCE[at:end]) for kind, at, end in cursor_positions(SOURCE)}
    # a line inside a block, blanked to its indentation: the truth is the whole line
    assert ("block_empty_line", ":\n    ", "size = width * height") in found
    # inside a name being typed
    assert ("mid_identifier", "    si", "ze = width * height") in found
    # just after an opening bracket (the first line is never a cursor line: nothing before it)
    lines = "x = 1\nprint(value)\n"
    assert ("after_bracket", "print(", "value)") in {
        (k, lines[:a][-6:], lines[a:e]) for k, a, e in cursor_positions(lines)
    }
    assert ("line_end", "x = 1\n", "print(value)") in {
        (k, lines[:a][-6:], lines[a:e]) for k, a, e in cursor_positions(lines)
    }
    # every cursor's truth is the rest of its line
    for _, at, end in cursor_positions(SOURCE):
        assert "\n" not in SOURCE[at:end] and SOURCE[end] == "\n"


def test_identifier_match_as_crosscodeeval_counts_it():
    assert identifiers("total = add(a, b)  # sum", "python") == ["total", "add", "a", "b"]
    assert identifiers("return total if ok else None") == ["total", "ok"]
    preds = ["total = add(a, b)", "total = add(b)", "", "x = 1"]
    refs = ["total = add(a, b)", "total = add(a, b)", "total = add(a, b)", "y = 1"]
    assert identifier_em(preds, refs, language="python") == 25.0
    # pair 2: 3 common of 3 predicted / 4 true -> F1 6/7; pairs 3 and 4: 0
    assert identifier_f1(preds, refs, language="python") == pytest.approx(round(100 * (1 + 6 / 7) / 4, 2))


def test_acceptance_proxy_and_empty_rate():
    preds = ["total = a", "total = a + b\nnext line", "   ", "wrong"]
    refs = ["total = a + b", "total = a + b", "total = a + b", "total = a + b"]
    assert accepted(preds, refs) == 50.0
    assert accepted_chars(preds, refs) == pytest.approx((len("total = a") + len("total = a + b")) / 4)
    assert empty_rate(preds, refs) == 25.0
    assert first_line_exact_match(preds, refs) == 25.0


def test_editor_task_end_to_end(tmp_path: Path):
    from tests.helpers.evaluate import make_dataset

    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate

    dataset = make_dataset(tmp_path / "dataset")
    evaluate(
        EvalConfig(
            models=["base=tiny-gpt-bigcode", "llama=tiny-llama"],
            dataset=dataset,
            tasks=["editor"],
            samples=8,
            max_new_tokens=8,
            out=tmp_path / "report",
        )
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for name in ("base", "llama"):
        scores = report["tasks"]["editor"]["models"][name]
        for key in ("first_line_exact_match", "edit_sim", "identifier_em", "identifier_f1", "accepted",
                    "accepted_chars", "empty_rate", "latency_p50_ms", "latency_p95_ms"):  # fmt: skip
            assert key in scores, key
        assert 0 < scores["latency_p50_ms"] <= scores["latency_p95_ms"]
    rows = [r for r in report["rows"] if r["task"] == "editor"]
    assert {r["kind"] for r in rows} == {"line_end", "mid_identifier", "block_empty_line", "after_bracket"}
    assert all(r["latency_ms"] > 0 for r in rows)
    # each row's truth is the rest of its line in the held-out file
    for row in rows:
        assert "\n" not in row["reference"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "post-processing:" in markdown and "trimming:" in markdown
    assert "- `accepted`: acceptance proxy" in markdown
    assert "- `latency_p95_ms`:" in markdown
