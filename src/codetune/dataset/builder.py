"""The build stage: documents -> leak-free splits -> format examples -> tokenized rows (+ FIM) -> folder.

:func:`build` reads as four steps: **setup** (the format, the tokenizer and what rows get: FIM,
repository context, the room blocks leave for them), **split** (load the documents, deal them to
train/valid/test, decontaminate), **encode** (per split, ``map`` the format's example builder and
its kind's encoder, batched, in workers when it pays) and **write** (stats and a folder that
replaces ``out`` only when complete).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset, write_dataset
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.paths import LENGTHS_PLOT, STATS, TOKENIZER
from codetune.dataset.blocks import BLOCK
from codetune.dataset.config import BuildConfig
from codetune.dataset.encode import ENCODERS, INTERNAL, EncodeOptions, FimOptions
from codetune.dataset.formats import Format, get_format
from codetune.dataset.splits import HELD_OUT, SPLITS, SplitPlan, plan_splits
from codetune.errors import ConfigError, InputError
from codetune.files import fingerprint
from codetune.fim import bos_ids
from codetune.progress import dataset_map
from codetune.stage import StageResult, default_out

logger = logging.getLogger(__name__)


def build(cfg: BuildConfig) -> StageResult:
    """Build the dataset folder described by ``cfg``; returns where it is and a few counts."""
    fmt = checked_format(cfg)
    if (whole := fmt.build_dataset()) is not None:
        return whole
    run = setup(cfg, fmt)
    parts = split(cfg, run)
    done = encode(cfg, run, parts)
    return write(cfg, run, parts, done)


# --- setup ---------------------------------------------------------------------------------------------


def load_build_tokenizer(model: str) -> tuple[Any, bool]:
    """The tokenizer of a model (or a bare tokenizer folder) and whether the model is encoder-decoder."""
    from codetune.modeling.loading import is_seq2seq_config, load_config, load_tokenizer, resolve_model

    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as error:
            raise InputError(f"cannot load the tokenizer in {path}: {error}") from None
        return tokenizer, False
    tokenizer = load_tokenizer(model)
    ref = resolve_model(model)
    try:
        seq2seq = is_seq2seq_config(load_config(ref.base))
    except Exception:
        seq2seq = False
    return tokenizer, seq2seq


def check_tokenizer(tokenizer: Any, model: str) -> None:
    if tokenizer.eos_token_id is None:
        raise InputError(
            f"the tokenizer of {model!r} has no EOS token; examples need one to mark their end "
            "(pick another tokenizer or add an eos_token to its tokenizer_config.json)"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"the tokenizer of {model!r} is not a fast tokenizer (offsets are needed)")


@dataclass
class Setup:
    """What every split is encoded with, and what stats.json says about it."""

    fmt: Format
    tokenizer: Any
    corpus: Path
    out: Path
    options: EncodeOptions
    fim: dict[str, Any]
    context: dict[str, Any]


def checked_format(cfg: BuildConfig) -> Format:
    """The format ``cfg`` names, once its input exists and the options it cannot take are refused."""
    if cfg.corpus is None:
        raise InputError(
            "no corpus given: pass CORPUS_DIR (or a JSON/JSONL file for instruct/seq2seq/code_json, "
            "a records folder for feedback)"
        )
    fmt = get_format(cfg)
    if not Path(cfg.corpus).exists():
        raise InputError(f"corpus not found: {cfg.corpus}")
    if cfg.repo_context and not fmt.repo_context:
        raise ConfigError(
            f"repo_context needs rows that are files of a repository (files, windows, units, "
            f"code_json), not the {fmt.name} format; set repo_context=false"
        )
    return fmt


def setup(cfg: BuildConfig, fmt: Format) -> Setup:
    """Load the tokenizer, decide FIM and context, and reserve room for them."""
    out = default_out(cfg.out, None, "dataset")
    check_output_folder(out, stage="build")
    corpus = Path(cfg.corpus)  # type: ignore[arg-type]  (checked_format: given)
    tokenizer, is_seq2seq = load_build_tokenizer(cfg.model)
    check_tokenizer(tokenizer, cfg.model)
    fim, fim_info = _fim_options(cfg, fmt, tokenizer, is_seq2seq)
    reserved = {"fim": fim.overhead if fim else 0, "context": 0}
    context_info: dict[str, Any] = {"enabled": cfg.repo_context}
    if cfg.repo_context:
        # File blocks leave room for context, or long files would never get any.
        reserved["context"] = min(cfg.repo_context_budget, cfg.max_length // 2)
        context_info |= {
            "budget_tokens": cfg.repo_context_budget,
            "block_reserve_tokens": reserved["context"],
        }
    # A plain row starts with BOS where the tokenizer adds one (Llama, Gemma), as pretraining text did.
    plain_bos = tuple(bos_ids(tokenizer)) if not is_seq2seq and fmt.kind != "seq2seq" else ()
    fmt.reserve_tokens = max(sum(reserved[what] for what in fmt.reserves), len(plain_bos))
    options = EncodeOptions(
        max_length=cfg.max_length,
        max_target_length=cfg.seq2seq.max_target_length or cfg.max_length,
        overlong=cfg.overlong,
        prompted=fmt.prompted,
        seed=cfg.seed,
        fim=fim,
        bos_ids=plain_bos,
    )
    return Setup(fmt, tokenizer, corpus, out, options, fim_info, context_info)


def _fim_options(
    cfg: BuildConfig, fmt: Format, tokenizer: Any, is_seq2seq: bool
) -> tuple[FimOptions | None, dict[str, Any]]:
    """FIM for causal text rows of a decoder-only model (the family's sentinels added when missing)."""
    fim_rate = cfg.fim_rate
    if is_seq2seq or fmt.kind == "seq2seq":
        if "fim_rate" in cfg.model_fields_set and cfg.fim_rate > 0:
            what = f"{cfg.model!r} is an encoder-decoder model" if is_seq2seq else "the seq2seq format"
            raise ConfigError(f"FIM was requested (fim_rate={cfg.fim_rate}) but {what}; set fim_rate=0")
        fim_rate = 0.0
        if fmt.kind != "seq2seq":
            raise ConfigError(
                f"{cfg.model!r} is an encoder-decoder model: use --format seq2seq, not {fmt.name}"
            )
        if not is_seq2seq:
            logger.warning(
                "seq2seq format with a decoder-only model %s: rows are source/target pairs", cfg.model
            )
    info: dict[str, Any] = {"rate": fim_rate, "spm_rate": cfg.fim_spm_rate, "split": cfg.fim_split}
    if fim_rate <= 0:
        return None, info
    from codetune.fim import FimFormat

    fim_format, added = FimFormat.ensure(tokenizer)
    family = fim_format.family
    info |= {"family": family.name, "tokens": [family.prefix, family.suffix, family.middle], "added": added}
    options = FimOptions(
        rate=fim_rate,
        spm_rate=cfg.fim_spm_rate,
        split=cfg.fim_split,
        # Tokens a FIM row adds besides the EOS it already had: BOS where the family has one, sentinels.
        overhead=fim_format.overhead - 1,
        syntax=cfg.fim_syntax.model_dump(),
    )
    return options, info


# --- split ---------------------------------------------------------------------------------------------


@dataclass
class Parts:
    """The documents of each split, the plan that dealt them, and what was dropped before encoding."""

    docs: list[dict[str, Any]]
    splits: dict[str, list[dict[str, Any]]]
    plan: SplitPlan
    dropped: Counter
    decontamination: dict[str, Any]


def split(cfg: BuildConfig, run: Setup) -> Parts:
    """Load the documents, deal them to train/valid/test by repository or file, decontaminate."""
    docs = run.fmt.load(run.corpus)
    run.fmt.check(docs)
    plan = plan_splits(
        docs, cfg.valid_fraction, cfg.test_fraction, cfg.seed, cfg.split_by, fallback=cfg.split_fallback
    )
    parts = {s: [d for d, label in zip(docs, plan.labels, strict=True) if label == s] for s in SPLITS}
    dropped: Counter = Counter()
    dropped.update(run.fmt.dropped)
    decontam = _decontaminate(cfg, parts, dropped)
    return Parts(docs, parts, plan, dropped, decontam)


def _decontaminate(cfg: BuildConfig, parts: dict[str, list[dict]], dropped: Counter) -> dict[str, Any]:
    """Drop benchmark text from every split and test documents that near-duplicate train ones."""
    from codetune.dataset.decontam import BenchmarkFilter, near_duplicates, read_benchmarks

    opts = cfg.decontam
    report: dict[str, Any] = {"minhash_threshold": opts.threshold if opts.minhash else None}
    if opts.benchmarks:
        bench = BenchmarkFilter(
            read_benchmarks(opts.benchmarks), ngram=opts.ngram, min_substring_chars=opts.min_substring_chars
        )
        counts: Counter = Counter()
        for split, docs in parts.items():
            kept = []
            for doc in docs:
                reason = bench.reason(doc["text"])
                if reason:
                    counts[f"{split}_{reason}"] += 1
                    dropped[f"benchmark_{reason}"] += 1
                else:
                    kept.append(doc)
            parts[split] = kept
        report["benchmark"] = dict(counts)
    if opts.minhash and parts["test"] and parts["train"]:
        hits = set(
            near_duplicates(
                (d["text"] for d in parts["train"]),
                [d["text"] for d in parts["test"]],
                threshold=opts.threshold,
                num_perm=opts.num_perm,
                shingle=opts.shingle,
            )
        )
        parts["test"] = [d for i, d in enumerate(parts["test"]) if i not in hits]
        dropped["test_near_duplicate_of_train"] += len(hits)
        report["test_near_duplicates"] = len(hits)
    return report


# --- encode --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """Each split's finished rows and what encoding them counted."""

    splits: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    context: dict[str, list[int]] = field(default_factory=dict)
    fim: Counter = field(default_factory=Counter)
    trimmed: int = 0
    # texts longer than a row that the format cut into blocks, and the blocks they gave
    split_texts: int = 0
    split_blocks: int = 0


def encode(cfg: BuildConfig, run: Setup, parts: Parts) -> Encoded:
    """Per split: the format's examples, then its kind's encoder; rows over the limit counted."""

    if not cfg.repo_context:
        return _encode_splits(cfg, run, parts, {})
    from codetune.dataset.formats.base import keeping_token_spans

    # the files' token boundaries found while cutting blocks price the context's snippets
    with keeping_token_spans():
        return _encode_splits(cfg, run, parts, _context_choosers(cfg, run.tokenizer, parts.splits))


def _encode_splits(cfg: BuildConfig, run: Setup, parts: Parts, choosers: dict[str, Any]) -> Encoded:
    from datasets import Dataset

    fmt, tokenizer = run.fmt, run.tokenizer
    # Batched tokenization already uses the tokenizer's threads; worker processes only pay off with
    # many cores (and then mostly for the Python-heavy builders: units, windows, FIM).
    cpus = os.cpu_count() or 1
    num_proc = cfg.num_proc or (min(cpus // 2, 8) if cpus >= 8 and len(parts.docs) >= 2000 else None)
    features = fmt.features()
    columns = sorted({key for doc in parts.docs for key in doc} - {"_where"})
    done = Encoded()
    for name in SPLITS:
        rows = parts.splits[name]
        if not rows:
            done.splits[name] = Dataset.from_dict({column: [] for column in features}, features=features)
            done.stats[name] = {"documents": 0, "documents_without_examples": 0, "examples": 0, "tokens": 0}
            done.lengths[name] = []
            continue
        procs = num_proc if num_proc and num_proc > 1 and len(rows) >= 4 * num_proc else None
        data = Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns})
        tag = fingerprint(cfg.model_dump(mode="json"), name, len(rows))
        examples = dataset_map(
            data,
            partial(fmt.examples, tokenizer=tokenizer),
            f"build {fmt.name} {name}",
            unit="document",
            batched=True,
            batch_size=64,
            num_proc=procs,
            remove_columns=data.column_names,
            new_fingerprint=f"{tag}-examples",
        )
        if BLOCK in examples.column_names:
            blocks = examples[BLOCK]
            done.split_texts += blocks.count(1)
            done.split_blocks += blocks.count(1) + sum(1 for index in blocks if index > 0)
        options = replace(run.options, split=name, context=choosers.get(name))
        encoded = dataset_map(
            examples,
            partial(ENCODERS[fmt.kind], tokenizer=tokenizer, opts=options),
            f"build tokenize {name}",
            unit="example",
            batched=True,
            batch_size=256,
            num_proc=procs,
            with_indices=True,
            new_fingerprint=f"{tag}-encode",
        )
        flags = encoded.select_columns(INTERNAL).to_dict()
        keep = flags["_keep"]
        parts.dropped["too_long"] += keep.count(False)
        done.trimmed += sum(1 for t, k in zip(flags["_trimmed"], keep, strict=True) if t and k)
        done.fim["examples"] += len(keep)
        done.fim["psm"] += flags["_fim"].count("psm")
        done.fim["spm"] += flags["_fim"].count("spm")
        done.fim["syntax_fallback_random"] += sum(flags["_fallback"])
        done.context[name] = [n for n, k in zip(flags["_context"], keep, strict=True) if k]
        if not any(keep):
            encoded = Dataset.from_dict({column: [] for column in features}, features=features)
        else:
            if not all(keep):
                encoded = encoded.select([i for i, k in enumerate(keep) if k])
            encoded = encoded.select_columns(list(features)).cast(features)
        done.splits[name] = encoded
        lens = [len(ids) for ids in encoded["input_ids"]]
        done.lengths[name] = lens
        # Documents are files (or records); one that gave no example is counted apart.
        documents = {(row.get("repo") or "", row["path"]) for row in rows}
        given = set(zip(encoded["repo"], encoded["path"], strict=True)) if len(encoded) else set()
        done.stats[name] = {
            "documents": len(documents & given),
            "documents_without_examples": len(documents - given),
            "examples": len(encoded),
            "tokens": int(sum(lens)),
        }
    if not any(done.stats[s]["examples"] for s in SPLITS):
        raise InputError(f"no examples could be built from {run.corpus} with format {fmt.name}")
    return done


def _context_choosers(cfg: BuildConfig, tokenizer: Any, parts: dict[str, list[dict]]) -> dict[str, Any]:
    """One repository-context chooser per split (codetune.dataset.context)."""
    from codetune.context import ContextOptions
    from codetune.dataset.context import split_contexts

    ctx = cfg.repo_context_options
    options = ContextOptions(
        budget_tokens=cfg.repo_context_budget,
        strategies=tuple(ctx.strategies),
        query_lines=ctx.query_lines,
        max_file_tokens=ctx.max_file_tokens,
        bm25_chunks=ctx.bm25_chunks,
    )
    return split_contexts(tokenizer, parts, options)


# --- write ---------------------------------------------------------------------------------------------


def write(cfg: BuildConfig, run: Setup, parts: Parts, done: Encoded) -> StageResult:
    """stats.json, the manifest, the length plot and the splits, written as one folder."""
    fmt = run.fmt
    fim_info, context_info = dict(run.fim), dict(run.context)
    if run.options.fim is not None:
        total = max(done.fim["examples"], 1)
        fim_n = done.fim["psm"] + done.fim["spm"]
        fim_info |= {
            "examples": fim_n,
            "psm": done.fim["psm"],
            "spm": done.fim["spm"],
            "realised_rate": fim_n / total,
            "realised_spm_rate": done.fim["spm"] / fim_n if fim_n else 0.0,
            "syntax_fallback_random": done.fim["syntax_fallback_random"],
            "applies_to": "text rows (prompt/completion rows stay left to right)",
        }
    if cfg.repo_context:
        context_info |= _context_stats(done.context)
    mixed = _add_mix(cfg, done.splits, done.stats, done.lengths)
    split_warnings = _check_splits(cfg, parts.plan, done.stats) + _overlong_warnings(cfg, fmt, done, parts)
    stats = {
        "format": fmt.name,
        "kind": fmt.kind,
        "model": cfg.model,
        "max_length": cfg.max_length,
        "split_by": parts.plan.by,
        "splits": done.stats,
        "split_plan": parts.plan.report(),
        "warnings": split_warnings,
        "dropped": dict(parts.dropped),
        "trimmed": done.trimmed,
        "overlong": {
            "mode": cfg.overlong,
            "split_texts": done.split_texts,
            "split_blocks": done.split_blocks,
            "trimmed": done.trimmed,
            "dropped": parts.dropped.get("too_long", 0),
        },
        "fim": fim_info,
        "repo_context": context_info,
        "decontamination": parts.decontamination,
        "mix": mixed,
    }
    manifest = {
        "stage": "build",
        "format": fmt.name,
        "kind": fmt.kind,
        "model": cfg.model,
        "corpus": str(run.corpus),
        "fingerprint": fingerprint(cfg.model_dump(mode="json"), _input_fingerprint(run.corpus, cfg)),
        "tokenizer": TOKENIZER,
        "vocab_size": len(run.tokenizer),
    }
    write_dataset(
        run.out,
        done.splits,
        stats,
        manifest,
        tokenizer=run.tokenizer,
        extra=lambda folder: _histogram(done.lengths, cfg.max_length, folder / LENGTHS_PLOT),
    )
    summary: dict[str, Any] = {f"{s} examples": done.stats[s]["examples"] for s in SPLITS}
    summary |= {
        "tokens": sum(v["tokens"] for v in done.stats.values()),
        "split by": parts.plan.by,
        "trimmed": done.trimmed,
        "dropped": sum(parts.dropped.values()),
    }
    if run.options.fim is not None:
        summary["fim rate"] = fim_info["realised_rate"]
    if cfg.repo_context:
        summary["with context"] = context_info["examples_with_context"]
    if split_warnings:
        summary["warnings"] = f"{len(split_warnings)} (see {STATS})"
    return StageResult("build", run.out, summary)


def _histogram(lengths: dict[str, list[int]], max_length: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, values in lengths.items():
        if values:
            ax.hist(values, bins=50, alpha=0.6, label=f"{split} ({len(values)})")
    ax.axvline(max_length, color="black", linestyle="--", linewidth=1, label="max_length")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.set_title("Example lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _context_stats(counts: dict[str, list[int]]) -> dict[str, Any]:
    """How many examples carry context and how many tokens it adds, overall and per split."""

    def summary(values: list[int]) -> dict[str, Any]:
        carrying = [v for v in values if v > 0]
        return {
            "examples": len(values),
            "examples_with_context": len(carrying),
            "mean_context_tokens": round(sum(carrying) / len(carrying), 2) if carrying else 0.0,
        }

    every = [v for values in counts.values() for v in values]
    return {**summary(every), "splits": {split: summary(values) for split, values in counts.items()}}


def _check_splits(cfg: BuildConfig, plan: Any, stats_splits: dict[str, Any]) -> list[str]:
    """Each split's share of the examples and tokens; a warning for every split that came out wrong.

    The plan's warnings (about documents) come first; then any asked-for split that holds documents
    but no examples (decontamination or the format dropped them all). Every warning is logged too.
    """
    warnings = list(plan.warnings)
    examples = sum(v["examples"] for v in stats_splits.values()) or 1
    tokens = sum(v["tokens"] for v in stats_splits.values()) or 1
    for counts in stats_splits.values():
        counts["share_of_examples"] = round(counts["examples"] / examples, 4)
        counts["share_of_tokens"] = round(counts["tokens"] / tokens, 4)
    asked = {"valid": cfg.valid_fraction, "test": cfg.test_fraction}
    for split in HELD_OUT:
        planned = plan.labels.count(split)
        if asked[split] > 0 and planned and not stats_splits[split]["examples"]:
            warnings.append(
                f"{split} has no examples: its {planned} document(s) were all dropped by "
                "decontamination or the format"
            )
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def _overlong_warnings(cfg: BuildConfig, fmt: Format, done: Encoded, parts: Parts) -> list[str]:
    """Say how many examples were over ``max_length`` and what happened to them (each also logged)."""
    examples = done.fim["examples"]  # every encoded row, dropped ones included
    warnings = []
    if done.trimmed:
        warnings.append(
            f"{done.trimmed} of {examples} {fmt.name} examples were longer than max_length "
            f"({cfg.max_length} tokens) and were trimmed to fit"
        )
    if parts.dropped.get("too_long"):
        warnings.append(
            f"{parts.dropped['too_long']} of {examples} {fmt.name} examples were longer than max_length "
            f"({cfg.max_length} tokens) and were dropped (overlong: drop)"
        )
    if done.split_texts and fmt.warn_split:
        warnings.append(
            f"{done.split_texts} {fmt.name} were longer than max_length ({cfg.max_length} tokens, "
            f"{fmt.room} for their text) and were cut into {done.split_blocks} blocks at inner boundaries"
        )
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def _add_mix(
    cfg: BuildConfig, splits: dict[str, Any], stats_splits: dict[str, Any], lengths: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """Build each ``cfg.mix`` input like the main one and append its rows to train and valid.

    Its own held-out rows go to valid, not test: the test split stays the main format's, so eval
    tasks see one kind of row. Splits stay leak-free: each input is split by its own files.
    """
    import tempfile

    from datasets import concatenate_datasets

    from codetune.dataset.formats import format_class

    mixed = []
    for source in cfg.mix:
        with tempfile.TemporaryDirectory(prefix="codetune-mix-") as tmp:
            sub = cfg.model_copy(
                update={
                    "format": source.format,
                    "corpus": source.corpus,
                    "mix": [],
                    "out": Path(tmp) / "dataset",
                    "repo_context": cfg.repo_context and format_class(source.format).repo_context,
                }
            )
            build(sub)
            part = read_dataset(Path(tmp) / "dataset").splits
            counts = {}
            for target, names in (("train", ["train"]), ("valid", ["valid", "test"])):
                for name in names:
                    rows = part[name]
                    for column in splits[target].column_names:
                        if column not in rows.column_names:
                            rows = rows.add_column(column, [""] * len(rows))
                    rows = rows.select_columns(splits[target].column_names).cast(splits[target].features)
                    splits[target] = concatenate_datasets([splits[target], rows])
                    counts[name] = len(rows)
                    lens = [len(ids) for ids in rows["input_ids"]]
                    lengths[target] = lengths[target] + lens
                    stats_splits[target]["examples"] += len(rows)
                    stats_splits[target]["tokens"] += int(sum(lens))
            mixed.append({"format": source.format, "corpus": str(source.corpus), "examples": counts})
    return mixed


def _input_fingerprint(corpus: Path, cfg: BuildConfig) -> Any:
    from codetune.dataset.inputs import input_fingerprint

    return [
        input_fingerprint(corpus),
        [input_fingerprint(Path(m.corpus)) for m in cfg.mix if Path(m.corpus).exists()],
        [input_fingerprint(Path(p)) for p in cfg.decontam.benchmarks if Path(p).exists()],
    ]
