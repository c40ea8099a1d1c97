"""The report folder: report.json (every number), report.md (tables, samples), PNG plots, manifest.json."""

from __future__ import annotations

import json
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
    metrics = [
        k
        for k in sorted({k for s in report["models"].values() for k in s})
        if k not in {"loss_tokens", "generations"} and not _all_zero(report["models"], k)
    ]
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


def _glossary(keys: list[str]) -> list[str]:
    """One glossary for every score shown, and why BLEU and edit similarity can disagree."""
    lines = [f"- `{k}`: {d}" for k in keys if (d := define(k))]
    if not lines:
        return []
    parts = ["## Glossary", "", *lines, ""]
    if any(k.endswith("bleu") for k in keys) and any(k.endswith("edit_sim") for k in keys):
        parts += [
            "BLEU and edit similarity can move in opposite directions: BLEU counts whole-word 4-grams shared "
            "with the truth over all completions, so on short one-line completions it is near 0 and moves "
            "with a handful of lines; edit similarity gives each completion partial credit character by "
            "character. For completions, read edit similarity first.",
            "",
        ]
    return parts


def _all_zero(models: dict[str, dict[str, Any]], key: str) -> bool:
    """A numeric score that is 0 (or missing) for every model: nothing to compare."""
    values = [scores.get(key) for scores in models.values()]
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(numeric) == len(values) and not any(numeric)


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


# The score that leads for a task: the first of these it has (edit similarity for completions).
HEADLINE_METRICS = ("edit_sim", "pass@1", "exact_match", "syntax_valid")
TASK_NAMES = {
    "completion": "line completion",
    "editor": "editor replay",
    "editor_context": "editor replay with repository context",
    "fim": "fill-in-the-middle",
    "prompts": "prompt file",
}
Z95 = 1.96  # normal quantile of a two-sided 95% interval


def _mean_ci(values: list[float], bound: float | None = None) -> tuple[float, float] | None:
    """95% interval of a mean (normal approximation; None below 2 values), kept within [0, bound]
    for a score that cannot leave it (a difference has no bound)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    half = Z95 * spread / len(values) ** 0.5
    low, high = mean - half, mean + half
    if bound is not None:
        low, high = max(low, 0.0), min(high, bound)
    return round(low, 2), round(high, 2)


def _rate_ci(rate: float, n: int, scale: float) -> tuple[float, float] | None:
    """Wilson 95% interval of a rate given on ``scale`` (100 for percent, 1 for a fraction)."""
    if n < 1:
        return None
    p = min(max(rate / scale, 0.0), 1.0)
    z2 = Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5 / (1 + z2 / n)
    return round(scale * max(centre - half, 0.0), 2), round(scale * min(centre + half, 1.0), 2)


def _per_row(report: dict[str, Any], task: str, metric: str) -> dict[str, dict[Any, float]]:
    """Per-prompt values of ``metric`` by model and prompt index (the report rows carry edit_sim)."""
    out: dict[str, dict[Any, float]] = {}
    for row in report.get("rows", []):
        if row.get("task") == task and isinstance(row.get(metric), (int, float)) and "index" in row:
            out.setdefault(row["model"], {})[row["index"]] = float(row[metric])
    return out


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The few numbers that matter: each task's leading score and the test loss, per model with its
    sample size and 95% interval, and every other model's difference from the first (paired where the
    per-prompt values are known)."""
    entries: list[dict[str, Any]] = []
    for task, info in (report.get("tasks") or {}).items():
        scores = info.get("models") or {}
        metric = next((m for m in HEADLINE_METRICS if scores and all(m in v for v in scores.values())), None)
        if metric is None:
            continue
        n = int(info.get("prompts") or 0) * (int(info.get("n") or 1) if metric == "syntax_valid" else 1)
        rows = _per_row(report, task, metric)
        scale = 1.0 if metric == "syntax_valid" else 100.0
        models: dict[str, dict[str, Any]] = {}
        for model, values in scores.items():
            value = values[metric]
            own = list(rows.get(model, {}).values())
            ci = _mean_ci(own, scale) if len(own) == n else _rate_ci(value, n, scale)
            models[model] = {"value": value, "ci": ci}
        first = next(iter(scores))
        for model in list(scores)[1:]:
            diff = round(scores[model][metric] - scores[first][metric], 2)
            paired = [
                rows[model][i] - rows[first][i] for i in rows.get(first, {}) if i in rows.get(model, {})
            ]
            if len(paired) == n:
                diff_ci = _mean_ci(paired)
            else:  # two independent rates
                p, q = scores[model][metric] / scale, scores[first][metric] / scale
                half = Z95 * scale * ((p * (1 - p) + q * (1 - q)) / max(n, 1)) ** 0.5
                diff_ci = (round(diff - half, 2), round(diff + half, 2)) if n else None
            models[model] |= {"diff": diff, "diff_ci": diff_ci}
        entries.append(
            {
                "task": task,
                "metric": metric,
                "n": n,
                "unit": "prompts",
                "higher_is_better": True,
                "models": models,
            }
        )
    losses = {m: v for m, v in report["models"].items() if isinstance(v.get("loss"), (int, float))}
    if losses:
        first = next(iter(losses))
        models = {m: {"value": v["loss"], "ci": None} for m, v in losses.items()}
        for model in list(losses)[1:]:
            models[model] |= {
                "diff": round(losses[model]["loss"] - losses[first]["loss"], 4),
                "diff_ci": None,
            }
        entries.append(
            {
                "task": "loss",
                "metric": "loss",
                "n": int(losses[first].get("loss_tokens") or 0),
                "unit": "tokens",
                "higher_is_better": False,
                "models": models,
            }
        )
    return entries


def _label(entry: dict[str, Any]) -> str:
    if entry["task"] == "loss":
        return "test loss per token"
    metric = {"edit_sim": "edit similarity", "exact_match": "exact match %"}.get(
        entry["metric"], entry["metric"]
    )
    return f"{TASK_NAMES.get(entry['task'], entry['task'])}: {metric}"


def _interval(ci: Any, signed: bool = False) -> str:
    if not ci:
        return ""
    low, high = ci
    return f"{low:+.2f} to {high:+.2f}" if signed else f"{low:.2f} to {high:.2f}"


def _summary(entries: list[dict[str, Any]], models: list[str]) -> list[str]:
    """A sentence per compared model: how many leading scores it improves, and which beyond the noise."""
    if len(models) < 2 or not entries:
        return []
    first = models[0]
    sentences = []
    for model in models[1:]:
        compared = [e for e in entries if "diff" in e["models"].get(model, {})]
        better = sum(
            (e["models"][model]["diff"] > 0) == e["higher_is_better"] and e["models"][model]["diff"] != 0
            for e in compared
        )
        groups: dict[str, list[str]] = {"clear": [], "noise": [], "none": []}
        for entry in compared:
            diff, ci = entry["models"][model]["diff"], entry["models"][model]["diff_ci"]
            kind = "none" if not ci else "clear" if ci[0] > 0 or ci[1] < 0 else "noise"
            groups[kind].append(f"{_label(entry)} {diff:+.4g}")
        sentence = f"`{model}` does better than `{first}` on {better} of {len(compared)} leading scores"
        if groups["clear"]:
            sentence += (
                f"; by more than this sample's noise (95% interval clear of 0): {', '.join(groups['clear'])}"
            )
        if groups["noise"]:
            sentence += f"; within the noise: {', '.join(groups['noise'])}"
        if groups["none"]:
            sentence += f"; {', '.join(groups['none'])}"
        sentences.append(sentence + ".")
    return sentences


def _headline_section(report: dict[str, Any]) -> list[str]:
    entries = report.get("headline") or []
    models = list(report["models"])
    if not entries:
        return []
    first = models[0]
    header = ["score", "n", *models]
    header += [f"{m} - {first} (95% interval)" for m in models[1:]]
    rows = []
    for entry in entries:
        cells: list[Any] = [_label(entry), f"{entry['n']:,} {entry['unit']}"]
        for model in models:
            found = entry["models"].get(model)
            cells.append(
                ""
                if found is None
                else f"{found['value']:.4g} " + (f"({_interval(found['ci'])})" if found["ci"] else "")
            )
        for model in models[1:]:
            found = entry["models"].get(model, {})
            diff = found.get("diff")
            cells.append(
                ""
                if diff is None
                else f"{diff:+.4g} "
                + (f"({_interval(found['diff_ci'], signed=True)})" if found.get("diff_ci") else "")
            )
        rows.append(cells)
    return [
        "## Summary",
        "",
        *_summary(entries, models),
        "",
        *_model_notes(report),
        _table(header, rows),
        "",
        "Intervals: a mean's normal 95% interval over the prompts (paired per prompt for differences); "
        "Wilson's for a rate. Loss is lower-is-better.",
        "",
    ]


def describe(source: str) -> str | None:
    """A word on a model a reader could mistake for a real one: a tiny preset (random weights), codetune's
    quickstart base (a toy), or a run trained from one of them."""
    from codetune.artifacts.run import is_run, read_run_manifest
    from codetune.modeling.presets import is_preset
    from codetune.quickstart.base import RECIPE_FILE

    if is_preset(source):
        return f"the tiny preset {source}: random weights that know nothing, a floor rather than a model"
    path = Path(source)
    recipe = path / RECIPE_FILE
    if recipe.is_file():
        try:
            steps = json.loads(recipe.read_text(encoding="utf-8"))["recipe"]["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (
            f"codetune's quickstart base, a tiny model pretrained for {steps} steps on the Python standard "
            "library on a CPU: a toy whose scores are low; the difference tuning makes is the point"
        )
    if is_run(path):
        base = str(read_run_manifest(path).get("model") or "")
        about = describe(base) if base else None
        if about is not None:
            return f"{read_run_manifest(path).get('method')} on {base} ({about})"
    return None


def _model_notes(report: dict[str, Any]) -> list[str]:
    notes = [
        f"- `{name}`: {text}"
        for name, source in (report.get("sources") or {}).items()
        if (text := describe(source))
    ]
    return [*notes, ""] if notes else []


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
    if s.get("samples_rule"):
        how += f"; {s['samples_rule']}"
    ds = report["dataset"]
    parts = ["# Evaluation report", "", f"Every number below: {how}.", ""]
    if ds.get("path"):
        parts += [
            f"Dataset: `{ds['path']}` (hash `{ds['hash']}`, format {ds['format']}, "
            f"{ds['test_rows']} test rows).",
            "",
        ]
    parts[2:2] = _headline_section(report)
    every = sorted({k for scores in report["models"].values() for k in scores})
    metrics = [m for m in every if not _all_zero(report["models"], m)]
    zero = [m for m in every if m not in metrics]
    parts += [
        "## Scores",
        "",
        _table(["metric", *models], [[m, *(report["models"][n].get(m) for n in models)] for m in metrics]),
        "",
    ]
    if zero:
        parts += [f"0 for every model, not shown: {', '.join(f'`{m}`' for m in zero)}.", ""]
    parts += _context_section(report)
    for name, info in report["tasks"].items():
        parts += [f"## Task `{name}`", "", f"{info['description']}; {info['prompts']} prompts.", ""]
        if info.get("prefix_alone"):
            names = ", ".join(f"`{model}`" for model in info["prefix_alone"])
            parts += [
                f"{names}: no fill-in-the-middle tokens, so each got the prefix alone (left to right); "
                "these scores are not comparable with published FIM results.",
                "",
            ]
        keys = [
            k
            for k in sorted({k for v in info["models"].values() for k in v})
            if not _all_zero(info["models"], k)
        ]
        parts += [
            _table(
                ["metric", *info["models"]], [[k, *(v.get(k) for v in info["models"].values())] for k in keys]
            ),
            "",
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
    # Each score once, by its plain name: a task's `editor_accepted` is `accepted` in its own table.
    prefixes = tuple(f"{name}_" for name in report["tasks"])
    plain = {k for info in report["tasks"].values() for v in info["models"].values() for k in v}
    plain |= {k for k in metrics if not k.startswith(prefixes)}
    parts += _glossary(sorted(k for k in plain if not _all_zero(report["models"], k) or k not in every))
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

    report = {**report, "headline": headline(report)}
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
