"""The build stage: documents -> leak-free splits -> format examples -> tokenized rows (+ FIM) -> folder.

Read top to bottom: load the tokenizer and check it, load and split the documents, decontaminate,
then per split ``map`` the format builder and the tokenizer (batched, in workers when it pays),
and write everything into a temporary folder that replaces ``out`` only when complete.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset, write_dataset
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.paths import LENGTHS_PLOT, STATS, TOKENIZER
from codetune.dataset.config import BuildConfig
from codetune.dataset.formats import Format, get_format, tokenize
from codetune.dataset.splits import HELD_OUT, SPLITS, plan_splits
from codetune.errors import ConfigError, InputError
from codetune.files import fingerprint
from codetune.progress import dataset_map
from codetune.stage import StageResult, default_out

logger = logging.getLogger(__name__)
INTERNAL = ["_fim", "_trimmed", "_keep", "_fallback", "_context"]
# Formats whose rows are not files of a repository: repository context does not apply to them.
NO_CONTEXT_FORMATS = ("instruct", "seq2seq")


# --- tokenizer -----------------------------------------------------------------------------------------


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


# --- encoding (runs inside datasets.map, possibly in worker processes) ----------------------------------


def _trim_pair(p: list[int], c: list[int], room: int) -> tuple[list[int], list[int]]:
    """Fit prompt + completion into ``room`` tokens: keep the prompt's end and the completion's start."""
    c_room = min(len(c), max(room - min(len(p), room // 2), 1))
    p_room = room - c_room
    return (p[len(p) - p_room :] if p_room > 0 else []), c[:c_room]


def _token_at(offsets: list[tuple[int, int]]) -> dict[int, int]:
    """Character offset -> index of the token starting there (first token when several share it).

    Empty when the offsets do not tile the text (a tokenizer that trims them): the caller then
    tokenizes the FIM pieces again instead of slicing.
    """
    table: dict[int, int] = {}
    last, last_end = -1, 0
    for index, (start, end) in enumerate(offsets):
        if start > last:
            if start != last_end:
                return {}
            table[start] = index
            last = start
        last_end = max(last_end, end)
    table[last_end] = len(offsets)
    return table


def encode_causal(
    batch: dict[str, list[Any]], indices: list[int], *, tokenizer: Any, opts: dict[str, Any]
) -> dict:
    """input_ids (EOS appended) and loss_mask per row; text rows may become FIM examples."""
    from codetune.dataset.context import fit
    from codetune.dataset.fim import SPLITS as FIM_SPLITS
    from codetune.dataset.fim import choose, cut, token_starts
    from codetune.fim import FimFormat

    eos, limit = tokenizer.eos_token_id, opts["max_length"]
    out: dict[str, list[Any]] = {"input_ids": [], "loss_mask": [], **{k: [] for k in INTERNAL}}
    chooser = opts.get("context")
    if opts["prompted"]:
        prompts = tokenize(tokenizer, batch["prompt"])["input_ids"]
        completions = tokenize(tokenizer, batch["completion"])["input_ids"]
        for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            trimmed = len(p) + len(c) + 1 > limit
            if trimmed:
                p, c = _trim_pair(p, c, limit - 1)
            ids, mask = [*p, *c, eos], [0] * len(p) + [1] * (len(c) + 1)
            added = 0
            if chooser is not None and not trimmed:
                prompt = batch["prompt"][row]
                found = chooser.choose(batch["repo"][row], batch["path"][row], prompt, "", limit - len(ids))
                fitted = found and fit(
                    found, limit, chooser.budget, len(ids), chooser.prompted, prompt, c, eos
                )
                if fitted:
                    added = len(fitted[0]) - len(ids)
                    ids, mask = fitted[0], fitted[1]
            out["input_ids"].append(ids)
            out["loss_mask"].append(mask)
            out["_context"].append(added)
            out["_fim"].append("")
            out["_trimmed"].append(trimmed)
            out["_keep"].append(not (trimmed and opts["overlong"] == "drop"))
            out["_fallback"].append(False)
        return out

    texts = batch["text"]
    fim_rate = opts["fim_rate"]
    fim = FimFormat.from_tokenizer(tokenizer) if fim_rate > 0 else None
    encoded = tokenize(tokenizer, texts, offsets=fim_rate > 0)
    plans: list[tuple[str, Any] | None] = []
    fallbacks: list[bool] = []
    # Prefixes keep the tokenizer's leading space, middles and suffixes do not (codetune.fim).
    prefixes_to_encode: set[str] = set()
    infills_to_encode: set[str] = set()
    sliced: dict[int, tuple[list[int], list[int], list[int]]] = {}
    # A FIM row holds the text's tokens plus the sentinels; blocks were cut with room for them.
    fim_room = limit - 1 - opts["fim_overhead"]
    cut_short: set[int] = set()
    for row, text in enumerate(texts):
        rng = random.Random(f"{opts['seed']}:{opts['split']}:{indices[row]}")
        layout = choose(rng, fim_rate, opts["spm_rate"]) if fim_rate > 0 else None
        fallback = False
        if layout is None:
            plans.append(None)
        else:
            offsets = encoded["offset_mapping"][row]
            if len(offsets) > fim_room:
                # Over the limit (a trimmed format): FIM the part that fits, counted as trimmed.
                offsets = offsets[: max(fim_room, 1)]
                text = text[: offsets[-1][1]]
                cut_short.add(row)
            info = {
                "offsets": token_starts(offsets),
                "language": batch["language"][row],
                **opts["fim_split_options"],
            }
            span = FIM_SPLITS[opts["fim_split"]](text, rng, info)
            token_at = _token_at(offsets)
            if span is not None and token_at and not (span[0] in token_at and span[1] in token_at):
                # Pieces cut inside a token are tokenized apart, which can take more tokens than the
                # text did: fall back to token boundaries when they would no longer fit.
                apart = cut(text, *span)
                encoded_apart = tokenize(tokenizer, [apart.prefix, apart.middle, apart.suffix])
                if sum(len(ids) for ids in encoded_apart["input_ids"]) > fim_room:
                    span = FIM_SPLITS[opts["fim_split"]](text, rng, {**info, "aligned": True})
            if span is None:
                fallback = True
                span = FIM_SPLITS["random"](text, rng, info)
            pieces = cut(text, *span)
            if span[0] in token_at and span[1] in token_at:
                # Cut on token boundaries: slice the ids instead of tokenizing the pieces again.
                ids, a, b = encoded["input_ids"][row][: len(offsets)], token_at[span[0]], token_at[span[1]]
                sliced[row] = (ids[:a], ids[a:b], ids[b:])
            else:
                prefixes_to_encode.add(pieces.prefix)
                infills_to_encode.update((pieces.middle, pieces.suffix))
            plans.append((layout, pieces))
        fallbacks.append(fallback)
    prefix_ids: dict[str, list[int]] = {}
    infill_ids: dict[str, list[int]] = {}
    if fim is not None and (prefixes_to_encode or infills_to_encode):
        ordered, infills = sorted(prefixes_to_encode), sorted(infills_to_encode)
        prefix_ids = dict(zip(ordered, fim.encode_many(ordered), strict=True))
        infill_ids = dict(zip(infills, fim.encode_many(infills, infill=True), strict=True))
    for row, plan in enumerate(plans):
        end = eos
        if plan is None:
            ids = encoded["input_ids"][row]
        else:
            assert fim is not None
            layout, pieces = plan
            if row in sliced:
                p, m, s = sliced[row]
            else:
                p, m, s = prefix_ids[pieces.prefix], infill_ids[pieces.middle], infill_ids[pieces.suffix]
            # The family's end-of-middle token takes the place of EOS.
            *ids, end = fim.example_ids(p, m, s, spm=layout == "spm")
        trimmed = len(ids) + 1 > limit or row in cut_short
        if trimmed:
            ids = ids[: limit - 1]
        row_ids, mask = [*ids, end], [1] * (len(ids) + 1)
        added = 0
        if chooser is not None and not trimmed:
            repo, path = batch["repo"][row], batch["path"][row]
            room = limit - len(row_ids)
            if plan is None:
                found = chooser.choose(repo, path, texts[row], "", room, whole=True)
                fitted = found and fit(
                    found, limit, chooser.budget, len(row_ids), chooser.plain, texts[row], ids, eos
                )
            else:
                layout, pieces = plan
                found = chooser.choose(repo, path, pieces.prefix, pieces.suffix, room)
                fitted = found and fit(
                    found,
                    limit,
                    chooser.budget,
                    len(row_ids),
                    chooser.fim,
                    fim,
                    pieces.prefix,
                    (p, m, s),
                    layout == "spm",
                )
            if fitted:
                added = len(fitted[0]) - len(row_ids)
                row_ids, mask = fitted[0], fitted[1]
        out["input_ids"].append(row_ids)
        out["loss_mask"].append(mask)
        out["_context"].append(added)
        out["_fim"].append("" if plan is None else plan[0])
        out["_trimmed"].append(trimmed)
        out["_keep"].append(not (trimmed and opts["overlong"] == "drop"))
        out["_fallback"].append(fallbacks[row])
    return out


def encode_seq2seq(batch: dict[str, list[Any]], *, tokenizer: Any, opts: dict[str, Any]) -> dict:
    """input_ids from the source, labels from the target, each ending in EOS."""
    eos = tokenizer.eos_token_id
    limit, target_limit = opts["max_length"], opts["max_target_length"]
    sources = tokenize(tokenizer, batch["source"])["input_ids"]
    targets = tokenize(tokenizer, batch["target"])["input_ids"]
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], **{k: [] for k in INTERNAL}}
    for s, t in zip(sources, targets, strict=True):
        trimmed = len(s) + 1 > limit or len(t) + 1 > target_limit
        out["input_ids"].append([*s[: limit - 1], eos])
        out["labels"].append([*t[: target_limit - 1], eos])
        out["_context"].append(0)
        out["_fim"].append("")
        out["_trimmed"].append(trimmed)
        out["_keep"].append(not (trimmed and opts["overlong"] == "drop"))
        out["_fallback"].append(False)
    return out


# --- features ------------------------------------------------------------------------------------------


def final_features(fmt: Format) -> Any:
    from datasets import Features, Sequence, Value

    if fmt.kind == "seq2seq":
        spec = {"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))}
        spec |= {name: Value("string") for name in ("source", "target", "path", "repo")}
        return Features(spec)
    spec = {"input_ids": Sequence(Value("int32")), "loss_mask": Sequence(Value("int8"))}
    spec |= {name: Value("string") for name in ("text", "path", "repo")}
    if fmt.prompted:
        spec |= {"prompt": Value("string"), "completion": Value("string")}
    return Features(spec)


# --- the stage ----------------------------------------------------------------------------------------


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


def build(cfg: BuildConfig) -> StageResult:
    """Build the dataset folder described by ``cfg``; returns where it is and a few counts."""
    from datasets import Dataset

    if cfg.corpus is None:
        raise InputError(
            "no corpus given: pass CORPUS_DIR (or a JSON/JSONL file for instruct/seq2seq/code_json)"
        )
    fmt = get_format(cfg)
    out = default_out(cfg.out, None, "dataset")
    check_output_folder(out, stage="build")
    corpus = Path(cfg.corpus)
    if not corpus.exists():
        raise InputError(f"corpus not found: {corpus}")

    tokenizer, is_seq2seq = load_build_tokenizer(cfg.model)
    check_tokenizer(tokenizer, cfg.model)
    fim_rate = cfg.fim_rate
    if is_seq2seq or fmt.kind == "seq2seq":
        if "fim_rate" in cfg.model_fields_set and cfg.fim_rate > 0:
            what = f"{cfg.model!r} is an encoder-decoder model" if is_seq2seq else "the seq2seq format"
            raise ConfigError(f"FIM was requested (fim_rate={cfg.fim_rate}) but {what}; set fim_rate=0")
        fim_rate = 0.0
    if is_seq2seq and fmt.kind != "seq2seq":
        raise ConfigError(f"{cfg.model!r} is an encoder-decoder model: use --format seq2seq, not {fmt.name}")
    if fmt.kind == "seq2seq" and not is_seq2seq:
        logger.warning("seq2seq format with a decoder-only model %s: rows are source/target pairs", cfg.model)

    fim_info: dict[str, Any] = {"rate": fim_rate, "spm_rate": cfg.fim_spm_rate, "split": cfg.fim_split}
    fim_overhead = 0
    if fim_rate > 0:
        from codetune.fim import FimFormat

        fim_format, added = FimFormat.ensure(tokenizer)
        family = fim_format.family
        # Tokens a FIM row adds besides the EOS it already had: BOS where the family has one, sentinels.
        fim_overhead = fim_format.overhead - 1
        # Blocks leave room for the sentinels, so a FIM'd block keeps every token.
        fmt.reserve_tokens = fim_overhead
        fim_info |= {
            "family": family.name,
            "tokens": [family.prefix, family.suffix, family.middle],
            "added": added,
        }

    context_info: dict[str, Any] = {"enabled": cfg.repo_context}
    if cfg.repo_context:
        if fmt.name in NO_CONTEXT_FORMATS or fmt.kind == "seq2seq":
            raise ConfigError(
                f"repo_context needs rows that are files of a repository (files, windows, units, "
                f"code_json), not the {fmt.name} format; set repo_context=false"
            )
        # File blocks leave room for context, or long files would never get any.
        reserve = min(cfg.repo_context_budget, cfg.max_length // 2)
        fmt.reserve_tokens += reserve
        context_info |= {"budget_tokens": cfg.repo_context_budget, "block_reserve_tokens": reserve}

    docs = fmt.load(corpus)
    fmt.check(docs)
    plan = plan_splits(
        docs, cfg.valid_fraction, cfg.test_fraction, cfg.seed, cfg.split_by, fallback=cfg.split_fallback
    )
    by = plan.by
    parts = {
        split: [d for d, label in zip(docs, plan.labels, strict=True) if label == split] for split in SPLITS
    }
    dropped: Counter = Counter()
    if getattr(fmt, "skipped", 0):
        dropped["no_target"] += fmt.skipped
    decontam = _decontaminate(cfg, parts, dropped)
    choosers: dict[str, Any] = {}
    if cfg.repo_context:
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
        choosers = split_contexts(tokenizer, parts, options)
    context_counts: dict[str, list[int]] = {}

    # Batched tokenization already uses the tokenizer's threads; worker processes only pay off with
    # many cores (and then mostly for the Python-heavy builders: units, windows, FIM).
    cpus = os.cpu_count() or 1
    num_proc = cfg.num_proc or (min(cpus // 2, 8) if cpus >= 8 and len(docs) >= 2000 else None)
    encode_opts = {
        "max_length": cfg.max_length,
        "max_target_length": cfg.seq2seq.max_target_length or cfg.max_length,
        "overlong": cfg.overlong,
        "prompted": fmt.prompted,
        "fim_rate": fim_rate,
        "spm_rate": cfg.fim_spm_rate,
        "fim_split": cfg.fim_split,
        "fim_overhead": fim_overhead,
        "fim_split_options": cfg.fim_syntax.model_dump(),
        "seed": cfg.seed,
    }
    features = final_features(fmt)
    splits: dict[str, Any] = {}
    stats_splits: dict[str, Any] = {}
    lengths: dict[str, list[int]] = {}
    fim_counts: Counter = Counter()
    trimmed_total = 0
    doc_columns = sorted({key for doc in docs for key in doc} - {"_where"})
    for split in SPLITS:
        rows = parts[split]
        if not rows:
            splits[split] = Dataset.from_dict({name: [] for name in features}, features=features)
            stats_splits[split] = {"documents": 0, "examples": 0, "tokens": 0}
            lengths[split] = []
            continue
        procs = num_proc if num_proc and num_proc > 1 and len(rows) >= 4 * num_proc else None
        data = Dataset.from_dict({key: [row.get(key) for row in rows] for key in doc_columns})
        tag = fingerprint(cfg.model_dump(mode="json"), split, len(rows))
        examples = dataset_map(
            data,
            partial(fmt.examples, tokenizer=tokenizer),
            f"build {fmt.name} {split}",
            unit="document",
            batched=True,
            batch_size=64,
            num_proc=procs,
            remove_columns=data.column_names,
            new_fingerprint=f"{tag}-examples",
        )
        opts = {**encode_opts, "split": split, "context": choosers.get(split)}
        if fmt.kind == "seq2seq":
            encoder = partial(encode_seq2seq, tokenizer=tokenizer, opts=opts)
            encoded = dataset_map(
                examples,
                encoder,
                f"build tokenize {split}",
                unit="example",
                batched=True,
                batch_size=256,
                num_proc=procs,
                new_fingerprint=f"{tag}-encode",
            )
        else:
            encoder = partial(encode_causal, tokenizer=tokenizer, opts=opts)
            encoded = dataset_map(
                examples,
                encoder,
                f"build tokenize {split}",
                unit="example",
                batched=True,
                batch_size=256,
                num_proc=procs,
                with_indices=True,
                new_fingerprint=f"{tag}-encode",
            )
        flags = encoded.select_columns(INTERNAL).to_dict()
        keep = flags["_keep"]
        dropped["too_long"] += keep.count(False)
        trimmed_total += sum(1 for t, k in zip(flags["_trimmed"], keep, strict=True) if t and k)
        fim_counts["examples"] += len(keep)
        fim_counts["psm"] += flags["_fim"].count("psm")
        fim_counts["spm"] += flags["_fim"].count("spm")
        fim_counts["syntax_fallback_random"] += sum(flags["_fallback"])
        context_counts[split] = [n for n, k in zip(flags["_context"], keep, strict=True) if k]
        if not any(keep):
            encoded = Dataset.from_dict({name: [] for name in features}, features=features)
        else:
            if not all(keep):
                encoded = encoded.select([i for i, k in enumerate(keep) if k])
            encoded = encoded.select_columns(list(features)).cast(features)
        splits[split] = encoded
        lens = [len(ids) for ids in encoded["input_ids"]]
        lengths[split] = lens
        stats_splits[split] = {"documents": len(rows), "examples": len(encoded), "tokens": int(sum(lens))}
    if not any(stats_splits[s]["examples"] for s in SPLITS):
        raise InputError(f"no examples could be built from {corpus} with format {fmt.name}")

    if fim_rate > 0:
        total = max(fim_counts["examples"], 1)
        fim_n = fim_counts["psm"] + fim_counts["spm"]
        fim_info |= {
            "examples": fim_counts["psm"] + fim_counts["spm"],
            "psm": fim_counts["psm"],
            "spm": fim_counts["spm"],
            "realised_rate": fim_n / total,
            "realised_spm_rate": fim_counts["spm"] / fim_n if fim_n else 0.0,
            "syntax_fallback_random": fim_counts["syntax_fallback_random"],
            "applies_to": "text rows (prompt/completion rows stay left to right)",
        }
    if cfg.repo_context:
        context_info |= _context_stats(context_counts)
    mixed = _add_mix(cfg, splits, stats_splits, lengths)
    split_warnings = _check_splits(cfg, plan, stats_splits)
    stats = {
        "format": fmt.name,
        "kind": fmt.kind,
        "model": cfg.model,
        "max_length": cfg.max_length,
        "split_by": by,
        "splits": stats_splits,
        "split_plan": plan.report(),
        "warnings": split_warnings,
        "dropped": dict(dropped),
        "trimmed": trimmed_total,
        "fim": fim_info,
        "repo_context": context_info,
        "decontamination": decontam,
        "mix": mixed,
    }
    manifest = {
        "stage": "build",
        "format": fmt.name,
        "kind": fmt.kind,
        "model": cfg.model,
        "corpus": str(corpus),
        "fingerprint": fingerprint(cfg.model_dump(mode="json"), _input_fingerprint(corpus, cfg)),
        "tokenizer": TOKENIZER,
        "vocab_size": len(tokenizer),
    }
    write_dataset(
        out,
        splits,
        stats,
        manifest,
        tokenizer=tokenizer,
        extra=lambda folder: _histogram(lengths, cfg.max_length, folder / LENGTHS_PLOT),
    )
    summary = {f"{s} examples": stats_splits[s]["examples"] for s in SPLITS}
    summary |= {
        "tokens": sum(v["tokens"] for v in stats_splits.values()),
        "split by": by,
        "trimmed": trimmed_total,
        "dropped": sum(dropped.values()),
    }
    if fim_rate > 0:
        summary["fim rate"] = fim_info["realised_rate"]
    if cfg.repo_context:
        summary["with context"] = context_info["examples_with_context"]
    if split_warnings:
        summary["warnings"] = f"{len(split_warnings)} (see {STATS})"
    return StageResult("build", out, summary)


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


def _add_mix(
    cfg: BuildConfig, splits: dict[str, Any], stats_splits: dict[str, Any], lengths: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """Build each ``cfg.mix`` input like the main one and append its rows to train and valid.

    Its own held-out rows go to valid, not test: the test split stays the main format's, so eval
    tasks see one kind of row. Splits stay leak-free: each input is split by its own files.
    """
    import tempfile

    from datasets import concatenate_datasets

    mixed = []
    for source in cfg.mix:
        with tempfile.TemporaryDirectory(prefix="codetune-mix-") as tmp:
            sub = cfg.model_copy(
                update={
                    "format": source.format,
                    "corpus": source.corpus,
                    "mix": [],
                    "out": Path(tmp) / "dataset",
                    "repo_context": cfg.repo_context and source.format not in NO_CONTEXT_FORMATS,
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
