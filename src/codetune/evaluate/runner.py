"""The eval stage: load each model in turn, run every task on the same prompts, score, write the report.

Read top to bottom: resolve the models, read the held-out split, build the tasks once (so every
model sees identical prompts), then per model generate + score + loss, then the sampling sweep,
then the report folder (written atomically).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.run import is_run
from codetune.errors import ConfigError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks import Task, build_tasks
from codetune.files import fingerprint
from codetune.progress import StepProgress
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


def held_out(folder: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any], str | None, Any]:
    """The test split's rows, stats.json, the dataset hash, and the dataset's tokenizer folder."""
    if folder is None:
        return [], {}, None, None
    dataset = read_dataset(folder)
    test = dataset.split("test", nonempty=True)
    return test.to_list(), dataset.stats, dataset.fingerprint, dataset.tokenizer


def _language(cfg: EvalConfig, rows: list[dict[str, Any]]) -> str | None:
    from codetune.languages import get_language, language_for_path

    if cfg.language:
        return get_language(cfg.language).name
    for row in rows[:50]:
        if row.get("path") and (lang := language_for_path(row["path"])) is not None and lang.grammar:
            return lang.name
    return None


def _params(cfg: EvalConfig, task: Task, temperature: float | None = None, top_p: float | None = None) -> Any:
    from codetune.generation.params import SamplingParams

    return SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p if top_p is None else top_p,
        stop=list(task.stop),
        seed=cfg.seed,
        n=task.n,
    )


def generate_for(
    model: Any,
    tokenizer: Any,
    task: Task,
    cfg: EvalConfig,
    params: Any,
    language: str | None = None,
    predictions: list[dict[str, Any]] | None = None,
    show_progress: bool = True,
) -> list[list[str]]:
    """n completions per item, built and post-processed exactly as the server does for an editor.

    Prompts over the room are trimmed like an editor's (prefix from the left, suffix from the
    right); FIM items get the server's post-processing, so eval scores what the editor receives.
    Each item's first completion is appended to ``predictions`` when given.
    """
    from codetune.generation.api import complete_requests
    from codetune.generation.engines import engine_for
    from codetune.generation.request import build_request
    from codetune.generation.sequence import context_length, is_seq2seq

    seq2seq = is_seq2seq(model)
    ctx = context_length(model)
    context = cfg.max_prompt_tokens + params.max_new_tokens
    if ctx is not None and not seq2seq:
        context = min(context, ctx)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    requests = [
        build_request(
            tokenizer,
            item.prompt,
            item.suffix,
            params,
            context=context,
            seq2seq=seq2seq,
            language=language,
            repo_context=task.context(item, count) if task.context is not None else None,
        )
        for item in task.items
    ]
    if seq2seq:
        for request in requests:  # the encoder's own limit: cut the prompt on the left
            request.prompt_ids = request.prompt_ids[-cfg.max_prompt_tokens :]
    engine = engine_for(model, tokenizer, max_batch_size=cfg.batch_size)
    out: list[list[str]] = [[] for _ in requests]
    generated = 0
    bar = StepProgress(f"eval {task.name}", len(requests), unit="prompt") if show_progress else None
    with bar if bar is not None else contextlib.nullcontext() as progress:
        for done, (index, completions) in enumerate(complete_requests(engine, requests), 1):
            texts = [c.text for c in completions]
            out[index] = [t.split("\n", 1)[0] for t in texts] if task.single_line else texts
            generated += sum(len(c.token_ids) for c in completions)
            if progress is not None:
                progress.update(done, tokens=generated)
    if predictions is not None:
        for index, item in enumerate(task.items):
            predictions.append(
                {
                    "id": item.meta.get("id", index),
                    "task": task.name,
                    "prefix": item.prompt,
                    "suffix": item.suffix,
                    "prediction": out[index][0] if out[index] else "",
                    "reference": item.reference,
                    **(
                        {"context": [s.path for s in requests[index].context_snippets]}
                        if task.context is not None
                        else {}
                    ),
                }
            )
    return out


def generate_timed(
    model: Any,
    tokenizer: Any,
    task: Task,
    cfg: EvalConfig,
    params: Any,
    language: str | None = None,
    predictions: list[dict[str, Any]] | None = None,
) -> tuple[list[list[str]], list[float]]:
    """One request at a time, as an editor sends them; returns the generations and seconds per request."""
    generations, latencies = [], []
    with StepProgress(f"eval {task.name}", len(task.items), unit="request") as progress:
        for index, item in enumerate(task.items):
            start = time.perf_counter()
            one = replace(task, items=[item])
            generations.extend(
                generate_for(model, tokenizer, one, cfg, params, language, predictions, show_progress=False)
            )
            latencies.append(time.perf_counter() - start)
            if predictions:
                predictions[-1]["id"] = item.meta.get("id", index)
            progress.update(index + 1)
    return generations, latencies


def latency_scores(latencies: list[float]) -> dict[str, float]:
    """p50 and p95 request latency in milliseconds (nearest-rank)."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return round(1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)

    return {"latency_p50_ms": rank(0.5), "latency_p95_ms": rank(0.95)}


def per_kind_scores(task: Task, generations: list[list[str]]) -> dict[str, float]:
    """Acceptance and first-line exact match per cursor kind."""
    from codetune.evaluate.metrics import accepted, first_line_exact_match

    out: dict[str, float] = {}
    kinds = sorted({item.meta.get("kind") for item in task.items if item.meta.get("kind")})
    for kind in kinds:
        pairs = [
            (g[0] if g else "", i.reference or "")
            for i, g in zip(task.items, generations)
            if i.meta.get("kind") == kind
        ]
        preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
        out[f"{kind}_accepted"] = accepted(preds, refs)
        out[f"{kind}_first_line_exact_match"] = first_line_exact_match(preds, refs)
    return out


def score_task(
    task: Task, generations: list[list[str]], cfg: EvalConfig, language: str | None
) -> tuple[dict, list]:
    """Scores of one model on one task, and its per-prompt rows."""
    from codetune.evaluate.metrics import compute

    firsts = [g[0] if g else "" for g in generations]
    rows: list[dict[str, Any]] = []
    if task.syntax:
        from codetune.evaluate.syntax import syntax_validity

        if language is None:
            raise ConfigError("syntax validity needs a language: pass --language (e.g. elm)")
        prompts = [i.prompt for i in task.items]
        plain = syntax_validity(language, prompts, generations)
        cut = syntax_validity(language, prompts, generations, truncate=True)
        for row, row_cut, item in zip(plain["rows"], cut["rows"], task.items):
            rows.append(
                {
                    **row,
                    "prompt_text": item.prompt[-200:],
                    "truncated_rate": row_cut["rate"],
                    "sample": generations[row["prompt"]][0] if generations[row["prompt"]] else "",
                }
            )
        return {
            "syntax_valid": round(plain["rate"], 4),
            "syntax_valid_truncated": round(cut["rate"], 4),
            "generations": plain["n"],
        }, rows
    if task.infilling is not None:
        return _score_infilling(task, generations, cfg)
    if task.safim is not None:
        from codetune.evaluate.published import safim_score

        result = safim_score(
            task.safim,
            [g[0] if g else "" for g in generations],
            allow_execution=cfg.allow_execution,
            unsafe_network=cfg.unsafe_network,
        )
        return {"pass@1": result["pass@1"], "not_executed": result["not_executed"]}, result["rows"]
    if task.execution is not None:
        from codetune.evaluate.passk import execute
        from codetune.evaluate.sandbox import eval_limits

        limits = eval_limits(cfg.exec_timeout, cfg.exec_memory_mb, cfg.exec_max_processes)
        result = execute(
            task.execution,
            generations,
            command=cfg.exec_command,
            extension=cfg.exec_extension,
            limits=limits,
            unsafe=[name for name in ("network", "mount", "pid") if getattr(cfg, f"unsafe_{name}")],
            ks=cfg.k,
        )
        return {k: round(v, 4) for k, v in result.items() if k.startswith("pass@")}, result["rows"]
    references = [i.reference or "" for i in task.items]
    if task.style is not None:
        from codetune.evaluate.codexglue import STYLES, tokenize_line

        if task.style == "codexglue-line":  # gt is CodeXGLUE-tokenised: so are the predictions
            preds = [tokenize_line(p, r, language) for p, r in zip(firsts, references, strict=True)]
        else:
            preds = [" ".join(p.split()) for p in firsts]
        scores = dict(STYLES[task.style](references, preds))
        scores.pop("n", None)
    else:
        scores = compute(
            task.metrics, firsts, references, prompts=[i.prompt for i in task.items], language=language
        )
    if language is not None and not task.single_line and task.style is None:
        scores |= compute(
            ["syntax_valid_truncated"],
            firsts,
            references,
            prompts=[i.prompt for i in task.items],
            language=language,
        )
    from codetune.evaluate.codexglue import fuzz_ratio, post_process_method

    for index, (item, pred) in enumerate(zip(task.items, firsts)):
        rows.append(
            {
                "index": index,
                **item.meta,
                "prompt_tail": item.prompt[-300:],
                "reference": item.reference,
                "prediction": pred,
                "edit_sim": fuzz_ratio(
                    post_process_method(pred.strip()), post_process_method((item.reference or "").strip())
                ),
            }
        )
    return scores, rows


def _score_infilling(task: Task, generations: list[list[str]], cfg: EvalConfig) -> tuple[dict, list]:
    """The official harness on what the editor would insert; plus syntax validity of the filled file."""
    from codetune.evaluate.infilling import score
    from codetune.evaluate.syntax import is_valid

    # A single-line hole is a whole line: the editor inserts the line and its newline.
    def inserted(text: str) -> str:
        return text if not task.single_line or text.endswith("\n") else text + "\n"

    samples = {p.task_id: [inserted(g) for g in gens] for p, gens in zip(task.infilling, generations)}
    result = score(task.infilling, samples, unsafe_network=cfg.unsafe_network, ks=cfg.k)
    valid = [
        is_valid("python", problem.prompt + completion + problem.suffix)
        for problem in task.infilling
        for completion in samples[problem.task_id]
    ]
    scores = {k: round(v, 2) for k, v in result.items() if k.startswith("pass@")}
    scores["exact_match"] = round(result["exact_match"], 2)
    scores["syntax_valid"] = round(100 * sum(valid) / max(1, len(valid)), 2)
    rows = [
        {**row, "completion": samples[row["task_id"]][0], "reference": problem.canonical_solution}
        for row, problem in zip(result["rows"], task.infilling)
    ]
    return scores, rows


def test_loss(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    cfg: EvalConfig,
    dataset_tokenizer: Any,
    max_length: int,
) -> dict[str, float]:
    """Mean loss per token and perplexity on the test split (the dataset's ids and loss mask when the
    model shares the dataset's tokenizer, else the rows' text re-tokenized; seq2seq: target tokens)."""
    import torch

    from codetune.generation.sequence import context_length, is_seq2seq

    if not rows:
        return {}
    same_vocab = dataset_tokenizer is not None and dataset_tokenizer.get_vocab() == tokenizer.get_vocab()
    if is_seq2seq(model):
        return _seq2seq_loss(model, tokenizer, rows[: cfg.loss_examples], same_vocab, max_length)
    limit = min(max_length, context_length(model) or max_length)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows[: cfg.loss_examples]:
            if same_vocab and "input_ids" in row:
                ids = list(row["input_ids"])[:limit]
                mask = list(row.get("loss_mask") or [1] * len(ids))[: len(ids)]
            else:
                text = row.get("text") or (row.get("prompt", "") + row.get("completion", ""))
                ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
                mask = [1] * len(ids)
            if len(ids) < 2:
                continue
            input_ids = torch.tensor([ids], device=device)
            logits = model(input_ids=input_ids).logits[0, :-1].float()
            targets = input_ids[0, 1:]
            weights = torch.tensor(mask[1:], device=device, dtype=torch.float32)
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            total += float((nll * weights).sum())
            count += int(weights.sum())
    if count == 0:
        return {}
    loss = total / count
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "loss_tokens": count}


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


def _seq2seq_loss(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], same_vocab: bool, max_length: int
) -> dict[str, float]:
    """Mean loss per target token of an encoder-decoder model (the decoder is fed the labels shifted)."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            if same_vocab and "input_ids" in row and "labels" in row:
                ids, labels = list(row["input_ids"])[:max_length], list(row["labels"])
            else:
                ids = tokenizer(row.get("source", ""), truncation=True, max_length=max_length)["input_ids"]
                labels = tokenizer(row.get("target", ""))["input_ids"]
            if not ids or not labels:
                continue
            out = model(
                input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device)
            )
            total += float(out.loss) * len(labels)
            count += len(labels)
    if count == 0:
        return {}
    loss = total / count
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "loss_tokens": count}


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
    from codetune.modeling.special_tokens import fim_tokens

    specs = parse_models(cfg.models)
    out = default_out(cfg.out, None, "report")
    check_output_folder(out, stage="eval")
    rows, stats, digest, tokenizer_dir = held_out(cfg.dataset)
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
        and "humaneval-infilling" not in cfg.tasks
    ):
        raise ConfigError("nothing to evaluate: give --dataset, a prompt file, a benchmark or problems")
    if cfg.sweep_top_p and not cfg.sweep_temperature:
        raise ConfigError("a sweep needs sweep_temperature values (top_p alone is meaningless when greedy)")
    language = _language(cfg, rows)
    tasks = build_tasks(cfg, rows, stats)
    if language is None and any(t.syntax for t in tasks):
        raise ConfigError("syntax validity of a prompt file needs a language: pass --language (e.g. elm)")
    want_loss = "loss" in cfg.tasks and bool(rows)
    if not tasks and not want_loss:
        raise ConfigError(f"no task has inputs (tasks: {', '.join(cfg.tasks)})")
    dataset_tokenizer = None
    if want_loss and tokenizer_dir is not None:
        from transformers import AutoTokenizer

        dataset_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
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
        scores: dict[str, Any] = {}
        for task in tasks:
            if any(i.suffix is not None for i in task.items) and fim_tokens(tokenizer) is None:
                if not task.fim_optional:
                    logger.warning("%s: no fill-in-the-middle tokens, task %s skipped", spec.name, task.name)
                    continue
                # as serve answers a suffix sent to such a model: the prefix alone
                task = replace(task, items=[replace(i, suffix=None) for i in task.items])
            task_predictions: list[dict[str, Any]] = []
            params = _params(cfg, task)
            if task.timed:
                generations, latencies = generate_timed(
                    model, tokenizer, task, cfg, params, language, task_predictions
                )
            else:
                generations = generate_for(model, tokenizer, task, cfg, params, language, task_predictions)
                latencies = []
            predictions.extend({"model": spec.name, **p} for p in task_predictions)
            task_scores, rows_ = score_task(task, generations, cfg, language)
            if latencies:
                task_scores |= latency_scores(latencies) | per_kind_scores(task, generations)
                for row, seconds in zip(rows_, latencies):
                    row["latency_ms"] = round(1000 * seconds, 1)
            prefix = "" if task.name == "completion" else f"{task.name}_"
            scores |= {(k if k.startswith(prefix) else f"{prefix}{k}"): v for k, v in task_scores.items()}
            per_task.setdefault(
                task.name,
                {"description": task.description, "n": task.n, "prompts": len(task.items), "models": {}},
            )["models"][spec.name] = task_scores
            task_rows.extend({"model": spec.name, "task": task.name, **r} for r in rows_)
        if want_loss:
            scores |= test_loss(
                model, tokenizer, rows, cfg, dataset_tokenizer, int(stats.get("max_length") or 2048)
            )
        for temperature in cfg.sweep_temperature:
            for top_p in cfg.sweep_top_p or [cfg.top_p]:
                sweep_task = next((t for t in tasks if t.syntax), None) or next(
                    (t for t in tasks if t.name == "completion"), None
                )
                if sweep_task is None:
                    raise ConfigError("the sampling sweep needs a prompt file or a completion task")
                generations = generate_for(
                    model, tokenizer, sweep_task, cfg, _params(cfg, sweep_task, temperature, top_p), language
                )
                sweep_scores, _ = score_task(sweep_task, generations, cfg, language)
                sweep.append(
                    {
                        "model": spec.name,
                        "task": sweep_task.name,
                        "temperature": temperature,
                        "top_p": top_p,
                        "n": sweep_task.n,
                        **sweep_scores,
                    }
                )
        results[spec.name] = scores
        del model
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
    summary: dict[str, Any] = {"models": len(specs), "tasks": ", ".join(t.name for t in tasks) or "loss"}
    for name, scores in results.items():
        for key in ("exact_match", "edit_sim", "bleu", "syntax_valid", "prompts_syntax_valid", "loss"):
            if key in scores:
                summary[f"{name} {key}"] = scores[key]
    return StageResult("eval", out, summary)
