"""The eval stage: load each model in turn, run every task on the same prompts, write the report.

Read top to bottom: resolve the models, read the held-out split, build the tasks once (so every
model sees identical prompts), then per model let each task evaluate itself (generate and score, or
measure the loss), then the sampling sweep, then the report folder (written atomically). The runner
never asks what kind a task is: each one scores itself (``codetune.evaluate.tasks``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.run import is_run
from codetune.errors import ConfigError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.session import ModelRun
from codetune.evaluate.tasks.base import Task
from codetune.evaluate.tasks.build import build_tasks
from codetune.files import fingerprint
from codetune.stage import StageResult, default_out

logger = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """A model as the user named it, and where it comes from."""

    name: str
    source: str

    @property
    def run_dir(self) -> Path | None:
        path = Path(self.source)
        return path if is_run(path) else None


def parse_models(models: list[str]) -> list[ModelSpec]:
    """``NAME=PATH`` names a model; anything else is named as given."""
    if not models:
        raise ConfigError("no model given: pass --model at least once")
    specs = []
    for text in models:
        name, source = text.split("=", 1) if "=" in text and not Path(text).exists() else (text, text)
        if not name.strip() or not source.strip():
            raise ConfigError(f"bad model {text!r}: expected NAME=PATH or a model")
        specs.append(ModelSpec(name.strip(), source.strip()))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two models share a name in {names}; name them with NAME=PATH")
    return specs


def held_out(folder: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """The test split's rows, stats.json and the dataset hash."""
    if folder is None:
        return [], {}, None
    dataset = read_dataset(folder)
    test = dataset.split("test", nonempty=True)
    return test.to_list(), dataset.stats, dataset.fingerprint


def _language(cfg: EvalConfig, rows: list[dict[str, Any]]) -> str | None:
    from codetune.languages import get_language, language_for_path

    if cfg.language:
        return get_language(cfg.language).name
    for row in rows[:50]:
        if row.get("path") and (lang := language_for_path(row["path"])) is not None and lang.grammar:
            return lang.name
    return None


def context_deltas(tasks: list[Task], per_task: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per task run with context: each model's metrics without, with, and the difference (with - without)."""
    out: dict[str, Any] = {}
    for task in tasks:
        if task.baseline is None or task.baseline not in per_task or task.name not in per_task:
            continue
        without, with_ = per_task[task.baseline]["models"], per_task[task.name]["models"]
        models: dict[str, Any] = {}
        for model in with_.keys() & without.keys():
            models[model] = {
                metric: {
                    "without": without[model][metric],
                    "with": value,
                    "delta": round(value - without[model][metric], 4),
                }
                for metric, value in with_[model].items()
                if isinstance(value, (int, float)) and isinstance(without[model].get(metric), (int, float))
            }
        out[task.name] = {"without": task.baseline, "models": models}
    return out


def _settings(cfg: EvalConfig) -> dict[str, Any]:
    return {
        "decoding": "greedy" if cfg.temperature <= 0 else "sampling",
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "max_prompt_tokens": cfg.max_prompt_tokens,
        "n": cfg.n,
        "seed": cfg.seed,
        "samples": cfg.samples,
        "context": {"runs": cfg.context, "budget_tokens": cfg.context_tokens},
        "postprocess": "FIM items get the served line/block clean-up (tree-sitter for the language); "
        "single-line tasks then show the first line of the completion; others are cut at the task's stop sequences",
        "trimming": f"prompts over {cfg.max_prompt_tokens} tokens (or the context) are trimmed as served: prefixes "
        "on the left, FIM suffixes on the right, the prefix keeping 3/4 of the room",
    }


def evaluate(cfg: EvalConfig) -> StageResult:
    """Evaluate every model on every task; write report.md, report.json and plots to ``cfg.out``."""
    from codetune.evaluate.report import write_report
    from codetune.modeling.loading import default_device, load_model, load_tokenizer

    specs = parse_models(cfg.models)
    out = default_out(cfg.out, None, "report")
    check_output_folder(out, stage="eval")
    rows, stats, digest = held_out(cfg.dataset)
    cfg, samples_rule = cfg.scaled_to(rows)
    if samples_rule:
        print(f"eval: {samples_rule}", file=sys.stderr, flush=True)
    if (
        cfg.dataset is None
        and cfg.prompts is None
        and cfg.benchmark is None
        and cfg.problems is None
        and cfg.safim is None
        and cfg.crosscodeeval is None
        and cfg.records is None
        and "humaneval-infilling" not in cfg.tasks
    ):
        raise ConfigError(
            "nothing to evaluate: give --dataset, a prompt file, a benchmark, problems or --records"
        )
    if cfg.sweep_top_p and not cfg.sweep_temperature:
        raise ConfigError("a sweep needs sweep_temperature values (top_p alone is meaningless when greedy)")
    language = _language(cfg, rows)
    tasks = build_tasks(cfg, rows, stats)
    needing = next((t.needs_language for t in tasks if t.needs_language), None)
    if language is None and needing:
        raise ConfigError(needing)
    if not tasks:
        raise ConfigError(f"no task has inputs (tasks: {', '.join(cfg.tasks)})")
    ranked = [t for t in tasks if t.sweep_rank is not None]
    sweep_task = min(ranked, key=lambda t: t.sweep_rank) if ranked else None
    if cfg.sweep_temperature and sweep_task is None:
        raise ConfigError("the sampling sweep needs a prompt file or a completion task")
    import torch

    torch.manual_seed(cfg.seed)
    device = cfg.device or default_device()
    results: dict[str, dict[str, Any]] = {}
    per_task: dict[str, dict[str, Any]] = {}
    task_rows: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    for spec in specs:
        logger.info("evaluating %s (%s)", spec.name, spec.source)
        model = load_model(spec.source, device=device, merge=True)  # an adapter runs at the base's speed
        tokenizer = load_tokenizer(spec.source)
        run = ModelRun(spec.name, model, tokenizer, cfg, language)
        scores: dict[str, Any] = {}
        for built in tasks:
            task = built.for_tokenizer(tokenizer, spec.name, prefix_alone=cfg.fim_missing == "prefix")
            if task is None:
                continue
            result = task.evaluate(run)
            predictions.extend({"model": spec.name, **p} for p in result.predictions)
            scores |= {
                (k if k.startswith(task.prefix) else f"{task.prefix}{k}"): v for k, v in result.scores.items()
            }
            entry = per_task.setdefault(
                task.name,
                {"description": task.description, "n": task.n, "prompts": task.size, "models": {}},
            )
            entry["models"][spec.name] = result.scores
            if task is not built and not task.fim_optional:  # a FIM task sent as the prefix alone
                entry.setdefault("prefix_alone", []).append(spec.name)
            task_rows.extend({"model": spec.name, "task": task.name, **r} for r in result.rows)
        for temperature in cfg.sweep_temperature:
            for top_p in cfg.sweep_top_p or [cfg.top_p]:
                result = sweep_task.evaluate(run, temperature=temperature, top_p=top_p)
                sweep.append(
                    {
                        "model": spec.name,
                        "task": sweep_task.name,
                        "temperature": temperature,
                        "top_p": top_p,
                        "n": sweep_task.n,
                        **result.scores,
                    }
                )
        results[spec.name] = scores
        del model, run
    report = {
        "models": results,
        "context": context_deltas(tasks, per_task),
        "settings": {**_settings(cfg), "samples_rule": samples_rule},
        "dataset": {
            "path": str(cfg.dataset) if cfg.dataset else None,
            "hash": digest,
            "format": stats.get("format"),
            "test_rows": len(rows),
        },
        "language": language,
        "tasks": per_task,
        "sweep": sweep,
        "sources": {s.name: s.source for s in specs},
        "rows": task_rows,
        "predictions": predictions,
    }
    run_dirs = {s.name: s.run_dir for s in specs if s.run_dir is not None}
    write_report(
        out,
        report,
        run_dirs,
        side_by_side=cfg.side_by_side,
        fingerprint=fingerprint(cfg.model_dump(mode="json"), digest),
    )
    summary: dict[str, Any] = {"models": len(specs), "tasks": ", ".join(t.name for t in tasks)}
    for name, scores in results.items():
        for key in ("exact_match", "edit_sim", "bleu", "syntax_valid", "prompts_syntax_valid", "loss"):
            if key in scores:
                summary[f"{name} {key}"] = scores[key]
    return StageResult("eval", out, summary)
