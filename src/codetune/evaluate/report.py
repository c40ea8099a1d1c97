"""The report folder: report.json (every number), report.md (tables, samples), PNG plots, manifest.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from codetune.artifacts import report as artifacts
from codetune.artifacts.paths import LOSS_PLOT, METRICS_PLOT
from codetune.artifacts.run import read_metrics

logger = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(_fmt(v).replace("|", "\\|").replace("\n", "⏎") for v in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def _code(text: str | None, limit: int = 600) -> str:
    text = (text or "")[-limit:]
    return "```\n" + text.replace("```", "`\u200b``") + "\n```"


def plot_metrics(report: dict[str, Any], path: Path) -> bool:
    """Bar charts: one panel per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    metrics = sorted(
        {
            k
            for s in report["models"].values()
            for k, v in s.items()
            if isinstance(v, (int, float)) and k not in {"loss_tokens", "generations"}
        }
    )
    if not models or not metrics:
        return False
    cols = min(4, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        values = [report["models"][m].get(metric, 0) or 0 for m in models]
        ax.bar(range(len(models)), values, color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(range(len(models)), models, rotation=20, fontsize=7)
        ax.set_title(metric, fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    s = report["settings"]
    fig.suptitle(f"{s['decoding']}, max {s['max_new_tokens']} new tokens, n={s['n']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_losses(run_dirs: dict[str, Path], path: Path) -> bool:
    """Training and eval loss curves of the run folders given as models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for i, (name, folder) in enumerate(run_dirs.items()):
        train, evals = [], []
        for row in read_metrics(folder):
            if "step" in row and isinstance(row.get("loss"), (int, float)):
                train.append((row["step"], row["loss"]))
            if "step" in row and isinstance(row.get("eval_loss"), (int, float)):
                evals.append((row["step"], row["eval_loss"]))
        if train:
            ax.plot(*zip(*train), color=f"C{i}", label=f"{name} train")
            drawn = True
        if evals:
            ax.plot(*zip(*evals), color=f"C{i}", linestyle="--", marker="o", label=f"{name} eval")
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


EXTRA_DEFINITIONS = {
    "pass@1": "pass@1 %: unbiased estimate (Chen et al. 2021) that one sample passes the tests",
    "pass@10": "pass@10 %: unbiased estimate that one of 10 samples passes the tests",
    "pass@100": "pass@100 %: unbiased estimate that one of 100 samples passes the tests",
    "latency_p50_ms": "median milliseconds per request, one request at a time as an editor sends them",
    "latency_p95_ms": "95th-percentile milliseconds per request, one request at a time",
    "loss": "mean cross-entropy per token on the test split",
    "perplexity": "exp(loss)",
    "not_executed": "problems whose unit tests could not be run here (scored by exact match only)",
    "generations": "completions checked",
    "exact_match": "exact match % (CodeXGLUE post-processing; infilling: stripped equality with the truth)",
    "syntax_valid": "syntax validity: the filled or completed program parses (0-1; infilling: percent)",
}


def define(key: str) -> str | None:
    """One line saying what a score key means (task and cursor-kind prefixes named)."""
    from codetune.evaluate.metrics import METRICS

    known = {**{name: m.label for name, m in METRICS.items()}, **EXTRA_DEFINITIONS}
    if key in known:
        return known[key]
    for name in sorted(known, key=len, reverse=True):
        if key.endswith("_" + name):
            return f"{known[name]}, for {key[: -len(name) - 1]}"
    return None


def _definitions(keys: list[str]) -> list[str]:
    lines = [f"- `{k}`: {d}" for k in keys if (d := define(k))]
    return [*lines, ""] if lines else []


def _context_section(report: dict[str, Any]) -> list[str]:
    """The same cursors without and with repository context: each metric and the difference."""
    runs = report.get("context") or {}
    if not runs:
        return []
    budget = (report["settings"].get("context") or {}).get("budget_tokens")
    parts = [
        "## With and without repository context",
        "",
        f"The same prompts, once without context and once with up to {budget} tokens of it; "
        "delta = with - without.",
        "",
    ]
    for name, info in runs.items():
        rows = [
            [model, metric, values["without"], values["with"], values["delta"]]
            for model, metrics in info["models"].items()
            for metric, values in metrics.items()
            if not metric.startswith("latency")
        ]
        parts += [
            f"`{info['without']}` -> `{name}`:",
            "",
            _table(["model", "metric", "without", "with", "delta"], rows),
            "",
        ]
    return parts


def render_markdown(report: dict[str, Any], plots: list[str], side_by_side: int) -> str:
    """report.md: how numbers were made, a metric table per model, per-task tables, samples."""
    s = report["settings"]
    models = list(report["models"])
    how = (
        f"{s['decoding']} decoding (temperature {s['temperature']}, top_p {s['top_p']}), "
        f"max {s['max_new_tokens']} new tokens, prompts cut to {s['max_prompt_tokens']} tokens, "
        f"n={s['n']} for prompt files and execution, seed {s['seed']}"
    )
    if s.get("postprocess"):
        how += f"; post-processing: {s['postprocess']}"
    if s.get("trimming"):
        how += f"; trimming: {s['trimming']}"
    ds = report["dataset"]
    parts = ["# Evaluation report", "", f"Every number below: {how}.", ""]
    if ds.get("path"):
        parts += [
            f"Dataset: `{ds['path']}` (hash `{ds['hash']}`, format {ds['format']}, "
            f"{ds['test_rows']} test rows).",
            "",
        ]
    metrics = sorted({k for scores in report["models"].values() for k in scores})
    parts += [
        "## Scores",
        "",
        _table(["metric", *models], [[m, *(report["models"][n].get(m) for n in models)] for m in metrics]),
        "",
    ]
    parts += _definitions(metrics)
    parts += _context_section(report)
    for name, info in report["tasks"].items():
        parts += [f"## Task `{name}`", "", f"{info['description']}; {info['prompts']} prompts.", ""]
        keys = sorted({k for v in info["models"].values() for k in v})
        parts += [
            _table(
                ["metric", *info["models"]], [[k, *(v.get(k) for v in info["models"].values())] for k in keys]
            ),
            "",
            *_definitions(keys),
        ]
        per_prompt = [r for r in report["rows"] if r["task"] == name and "successes" in r]
        if per_prompt:
            parts += ["Per prompt (successes / fails / rate; rate after truncation):", ""]
            parts += [
                _table(
                    ["model", "prompt", "successes", "fails", "rate", "truncated rate"],
                    [
                        [r["model"], r["prompt"], r["successes"], r["fails"], r["rate"], r["truncated_rate"]]
                        for r in per_prompt
                    ],
                ),
                "",
            ]
        samples = [r for r in report["rows"] if r["task"] == name and "prediction" in r]
        shown = sorted({r["index"] for r in samples})[:side_by_side]
        for index in shown:
            same = [r for r in samples if r["index"] == index]
            parts += [
                f"### Sample {index}",
                "",
                "Prompt (end):",
                "",
                _code(same[0]["prompt_tail"], 300),
                "",
                "Reference:",
                "",
                _code(same[0]["reference"]),
                "",
            ]
            for r in same:
                parts += [f"**{r['model']}** (edit sim {r['edit_sim']}):", "", _code(r["prediction"]), ""]
    if report["sweep"]:
        keys = [k for k in report["sweep"][0] if k not in {"model", "task", "temperature", "top_p", "n"}]
        parts += [
            "## Sampling sweep",
            "",
            f"max {s['max_new_tokens']} new tokens, n per prompt as shown.",
            "",
        ]
        parts += [
            _table(
                ["model", "temperature", "top_p", "n", *keys],
                [
                    [r["model"], r["temperature"], r["top_p"], r["n"], *(r.get(k) for k in keys)]
                    for r in report["sweep"]
                ],
            ),
            "",
        ]
    if plots:
        parts += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(parts)


def write_report(
    out: Path,
    report: dict[str, Any],
    run_dirs: dict[str, Path],
    *,
    side_by_side: int = 3,
    fingerprint: str | None = None,
) -> Path:
    """Write the whole report folder atomically."""

    def plots(folder: Path) -> list[str]:
        drawn = []
        if plot_metrics(report, folder / METRICS_PLOT):
            drawn.append(METRICS_PLOT)
        if run_dirs and plot_losses(run_dirs, folder / LOSS_PLOT):
            drawn.append(LOSS_PLOT)
        return drawn

    manifest = {
        "stage": "eval",
        "fingerprint": fingerprint,
        "models": report["sources"],
        "dataset": report["dataset"],
    }
    return artifacts.write_report(
        out,
        report,
        markdown=lambda written, drawn: render_markdown(written, drawn, side_by_side),
        plots=plots,
        manifest=manifest,
    )
