"""report.md leads with the few numbers that matter (n, 95% intervals, a summary sentence), hides scores
that are 0 for every model, has one glossary, and metrics.png has no empty panel."""

from __future__ import annotations

import json
import random
import re
import statistics

from PIL import Image

from codetune.evaluate.report import write_report

EDITOR_ROWS = 40
COMPLETION_ROWS = 60


def _report(tmp_path):
    rng = random.Random(0)
    rows, tasks, models = [], {}, {"base": {}, "tuned": {}}
    for task, count, gain in (("completion", COMPLETION_ROWS, 6.0), ("editor", EDITOR_ROWS, 0.3)):
        per_model = {}
        base = [rng.uniform(10, 60) for _ in range(count)]
        for model, values in (("base", base), ("tuned", [b + gain + rng.gauss(0, 2) for b in base])):
            rows += [
                {"model": model, "task": task, "index": i, "edit_sim": v, "prediction": "x", "reference": "y",
                 "prompt_tail": "p"}
                for i, v in enumerate(values)
            ]  # fmt: skip
            per_model[model] = {
                "edit_sim": round(statistics.mean(values), 2),
                "exact_match": 0.0,
                "bleu": 0.0,
            }
            prefix = "" if task == "completion" else f"{task}_"
            models[model] |= {f"{prefix}{k}": v for k, v in per_model[model].items()}
        tasks[task] = {"description": task, "n": 1, "prompts": count, "models": per_model}
    models["base"] |= {"loss": 3.4, "perplexity": 30.0, "loss_tokens": 5000}
    models["tuned"] |= {"loss": 3.1, "perplexity": 22.2, "loss_tokens": 5000}
    report = {
        "models": models,
        "tasks": tasks,
        "rows": rows,
        "context": {},
        "sweep": [],
        "settings": {"decoding": "greedy", "temperature": 0, "top_p": 1, "max_new_tokens": 8,
                     "max_prompt_tokens": 64, "n": 1, "seed": 0},
        "dataset": {"path": None},
        "sources": {"base": "tiny-gpt-bigcode", "tuned": str(tmp_path / "somewhere")},
    }  # fmt: skip
    return report, rows


def test_summary_leads_with_n_intervals_and_a_sentence_and_zero_rows_are_hidden(tmp_path):
    report, rows = _report(tmp_path)
    out = write_report(tmp_path / "report", report, {})
    written = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()

    completion = next(e for e in written["headline"] if e["task"] == "completion")
    assert completion["n"] == COMPLETION_ROWS and completion["metric"] == "edit_sim"
    base = [r["edit_sim"] for r in rows if r["task"] == "completion" and r["model"] == "base"]
    tuned = [r["edit_sim"] for r in rows if r["task"] == "completion" and r["model"] == "tuned"]
    half = 1.96 * statistics.stdev(base) / len(base) ** 0.5
    low, high = completion["models"]["base"]["ci"]
    assert (
        abs(low - (statistics.mean(base) - half)) < 0.02 and abs(high - (statistics.mean(base) + half)) < 0.02
    )
    diffs = [t - b for t, b in zip(tuned, base)]  # paired per prompt
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    low, high = completion["models"]["tuned"]["diff_ci"]
    assert abs(low - (statistics.mean(diffs) - half)) < 0.02
    loss = next(e for e in written["headline"] if e["task"] == "loss")
    assert loss["n"] == 5000 and loss["higher_is_better"] is False

    summary = md[: md.index("## Scores")]
    assert "`tuned` does better than `base` on 3 of 3 leading scores" in summary
    assert re.search(
        r"by more than this sample's noise \(95% interval clear of 0\): line completion: edit similarity \+[\d.]+;",
        summary,
    )
    assert re.search(
        r"within the noise: editor replay: edit similarity [+-][\d.]+; test loss per token -0.3\.", summary
    )
    assert f"| line completion: edit similarity | {COMPLETION_ROWS} prompts |" in summary
    assert "random weights" in summary  # the tiny preset is said to be one
    scores = md[md.index("## Scores") : md.index("## Glossary")]
    assert "| exact_match |" not in scores and "| bleu |" not in scores  # 0 for both models
    assert "0 for every model, not shown: `bleu`, `editor_bleu`" in scores
    assert md.count("## Glossary") == 1 and md.count("- `edit_sim`:") == 1


def test_metrics_plot_has_a_panel_per_score_that_is_not_zero_everywhere(tmp_path):
    report, _ = _report(tmp_path)
    out = write_report(tmp_path / "report", report, {})
    shown = {k for scores in report["models"].values() for k, v in scores.items() if v and k != "loss_tokens"}
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    width, height = Image.open(out / "metrics.png").size
    assert (width, height) == (int(3.2 * columns * 100), int(2.8 * rows * 100))
