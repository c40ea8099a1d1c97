"""The ``feedback`` format: editor records -> rows for three objectives, in one dataset folder.

Records (``codetune.artifacts.records``: served completions joined to what the developer did) become:

- ``sft``: each desirable completion as the target of its own prompt: the text the developer kept
  of an accepted suggestion and, where the suggestion was not taken, the line they typed instead
  (``typed``: read from a later prompt of the same file, as ``eval --task acceptance`` reads it),
  laid out as the model family's FIM example (``codetune.fim``, what serve sends) or, without a
  suffix, as a plain prompt + completion. Any method trains on these (``--method lora``).
- ``kto``: each desirable (``label`` 1) and rejected (``label`` 0) completion (``--method kto``).
- ``dpo``: an accepted and a rejected completion of the same or nearly the same prompt (same file,
  same suffix, one prefix extends the other by at most ``pair_max_chars``: the developer typed on
  between the two), both rewritten as completions of the shorter prompt, so the pair shares it
  exactly: ``input_ids`` the chosen row, ``rejected_input_ids`` the rejected one (``--method dpo``);
  and the typed line against the rejected suggestion on the very same prompt.

Developers reject most suggestions: without the typed lines, the rows are nearly all "not that".

Every row says which in its ``objective`` column; ``loss_mask`` is 1 on the completion, and on its end
token only where the completion is known to end there (``ends``: a whole suggestion the model stopped
itself; not a typed line, a kept part or a suggestion cut at max_tokens). Nearly-same prompts stay in
one split, and the test split holds ``sft`` rows only (held-out accepted completions). stats.json
counts each objective and every record dropped, and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import OBJECTIVE_COLUMN, write_dataset
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.paths import TOKENIZER
from codetune.artifacts.records import Labeled, read_records, typed_after
from codetune.dataset.config import BuildConfig, FeedbackOptions
from codetune.dataset.formats.base import Format, tokenize
from codetune.dataset.splits import SPLITS, plan_splits
from codetune.errors import ConfigError, InputError
from codetune.files import fingerprint
from codetune.fim import bos_ids
from codetune.languages import language_for_path
from codetune.stage import StageResult, default_out

logger = logging.getLogger(__name__)

NAME = "feedback"
OBJECTIVES = ("sft", "kto", "dpo")
# Rows of these objectives are written to each split (the test split: held-out accepted completions).
SPLIT_OBJECTIVES = {"train": OBJECTIVES, "valid": OBJECTIVES, "test": ("sft",)}


# --- grouping ------------------------------------------------------------------------------------------


def _near(shorter: str, longer: str, max_chars: int) -> bool:
    return len(longer) - len(shorter) <= max_chars and longer.startswith(shorter)


def prompt_groups(items: list[Labeled], max_chars: int) -> list[int]:
    """A group number per item: items of one group share file and suffix, and their prefixes chain
    by extensions of at most ``max_chars`` characters (nearly the same prompt)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple, dict[str, list[int]]] = {}
    for index, item in enumerate(items):
        c = item.completion
        buckets.setdefault((c.client, c.path, c.suffix), {}).setdefault(c.prefix, []).append(index)
    for prefixes in buckets.values():
        lengths = {len(p) for p in prefixes}
        for prefix, members in prefixes.items():
            for other in members[1:]:
                parent[find(other)] = find(members[0])
            for cut in range(len(prefix) - 1, max(len(prefix) - max_chars, 0) - 1, -1):
                if cut in lengths and prefix[:cut] in prefixes:
                    parent[find(members[0])] = find(prefixes[prefix[:cut]][0])
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(items))]


def ends(item: Labeled, text: str) -> bool:
    """Whether ``text``, a completion of ``item``'s prompt, is known to end where it ends: the whole
    suggestion, stopped by the model. A suggestion cut at max_tokens, the part of one the developer
    kept, or the line they typed (they went on typing after it) does not, and a row that learned the
    end token there would teach stopping early: after a typed line's newline, at the start of
    every line the editor asks about."""
    return text == item.completion.text and item.completion.finish_reason != "length"


def preference_pairs(
    items: list[Labeled], groups: list[int], opts: FeedbackOptions
) -> list[tuple[str, Completion, Completion, str | None, Labeled]]:
    """(prompt, chosen, rejected, suffix, accepted item) for accepted/rejected items of one group whose
    prompts are directly nearly the same; the nearest ``max_pairs_per_accepted`` for each accepted one."""
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    pairs = []
    for indices in members.values():
        rejected = [items[i] for i in indices if items[i].accepted is False]
        for i in indices:
            good = items[i]
            if good.accepted is not True:
                continue
            near = []
            for bad in rejected:
                a, b = good.completion.prefix, bad.completion.prefix
                if _near(b, a, opts.pair_max_chars) or _near(a, b, opts.pair_max_chars):
                    near.append((abs(len(a) - len(b)), bad))
            near.sort(key=lambda pair: pair[0])
            for _, bad in near[: opts.max_pairs_per_accepted]:
                a, b = good.completion.prefix, bad.completion.prefix
                common = min(a, b, key=len)
                chosen = Completion(a[len(common) :] + good.target, ends(good, good.target))
                other = Completion(b[len(common) :] + bad.completion.text, ends(bad, bad.completion.text))
                pairs.append((common, chosen, other, good.completion.suffix, good))
    return pairs


# --- encoding ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A completion's text, and whether its end token is learned after it (``ends``)."""

    text: str
    ends: bool = True


@dataclass
class Encoder:
    """Prompt + completion ids as serve sends and training learns them: the family's FIM layout with a
    suffix, [BOS] + prefix + completion + EOS without (the BOS a plain prompt starts with at serve);
    a prompt over ``max_length`` loses the prefix's start and the suffix's end (``prefix_ratio`` of the
    room for the prefix), never the completion. The end token is always in the row, and in the loss
    only where the completion ``ends``."""

    tokenizer: Any
    fim: Any
    max_length: int
    prefix_ratio: float

    def _ids(self, text: str, *, infill: bool, fim: bool) -> list[int]:
        if not text:
            return []
        if fim:
            return self.fim.encode_infill(text) if infill else self.fim.encode(text)
        return list(tokenize(self.tokenizer, [text])["input_ids"][0])

    def rows(
        self, prefix: str, suffix: str | None, completions: list[Completion]
    ) -> list[tuple[list[int], list[int]]] | None:
        """(input_ids, loss_mask) of each completion after one shared prompt; None when one cannot fit."""
        fim = suffix is not None
        middles = [self._ids(c.text, infill=True, fim=fim) for c in completions]
        bos = [] if fim else bos_ids(self.tokenizer)
        overhead = self.fim.overhead if fim else len(bos) + 1
        room = self.max_length - overhead - max(len(m) for m in middles)
        if room < 1:
            return None
        before = self._ids(prefix, infill=False, fim=fim)
        after = self._ids(suffix or "", infill=True, fim=fim)
        keep_after = min(len(after), max(room - len(before), int(room * (1 - self.prefix_ratio))))
        keep_before = min(len(before), room - keep_after)
        before, after = before[len(before) - keep_before :], after[:keep_after]
        out = []
        for completion, middle in zip(completions, middles, strict=True):
            if fim:
                ids = self.fim.example_ids(before, middle, after)
            else:
                ids = [*bos, *before, *middle, self.tokenizer.eos_token_id]
            prompt = len(ids) - len(middle) - 1
            out.append((ids, [0] * prompt + [1] * len(middle) + [int(completion.ends)]))
        return out


class Feedback(Format):
    """Editor records in; sft, kto and dpo rows out. Not documents cut and encoded one by one:
    the records are joined to their events and paired, so the format builds its dataset itself."""

    name = "feedback"
    prompted = True
    repo_context = False

    def features(self) -> Any:
        return _features()

    def build_dataset(self) -> StageResult:
        return build_feedback(self.cfg)


def _features() -> Any:
    from datasets import Features, Sequence, Value

    spec = {
        "input_ids": Sequence(Value("int32")),
        "loss_mask": Sequence(Value("int8")),
        OBJECTIVE_COLUMN: Value("string"),
        "label": Value("int8"),
        "rejected_input_ids": Sequence(Value("int32")),
        "rejected_loss_mask": Sequence(Value("int8")),
    }
    spec |= {name: Value("string") for name in ("text", "prompt", "completion", "path", "repo", "language")}
    return Features(spec)


def _row(
    objective: str, item: Labeled, encoded: list, label: int, prompt: str, completion: str
) -> dict[str, Any]:
    c = item.completion
    language = c.language or (found.name if c.path and (found := language_for_path(c.path)) else "")
    rejected = encoded[1] if len(encoded) > 1 else ([], [])
    return {
        "input_ids": encoded[0][0],
        "loss_mask": encoded[0][1],
        OBJECTIVE_COLUMN: objective,
        "label": label,
        "rejected_input_ids": rejected[0],
        "rejected_loss_mask": rejected[1],
        "text": prompt + completion,
        "prompt": prompt,
        "completion": completion,
        "path": c.path or "",
        "repo": c.client or "",
        "language": language,
    }


# --- the stage -----------------------------------------------------------------------------------------


@dataclass
class Target:
    """One completion to learn from, for the prompt of ``item``: ``desirable`` (what the developer
    kept of an accepted suggestion, or the line they typed instead) or not (a rejected suggestion)."""

    item: Labeled
    text: str
    desirable: bool
    typed: bool = False

    @property
    def ends(self) -> bool:
        return not self.typed and ends(self.item, self.text)


def targets(labeled: list[Labeled], typed: dict[int, str], dropped: Counter) -> list[Target]:
    """The targets of the records, each once: accepted and rejected suggestions, and for every prompt
    whose suggestion was not taken, the line the developer typed there (``typed``: index -> line)."""
    seen: set[tuple] = set()
    out = []

    def add(target: Target) -> None:
        c = target.item.completion
        if not target.text.strip():
            dropped["empty_target"] += 1
            return
        key = (c.prefix, c.suffix, target.text, target.desirable)
        if key in seen:
            dropped["duplicate"] += 1
            return
        seen.add(key)
        out.append(target)

    for index, item in enumerate(labeled):
        line = typed.get(index)
        if item.accepted is None and line is None:
            dropped["no_feedback"] += 1
            continue
        if item.accepted is not None:
            add(Target(item, item.target if item.accepted else item.completion.text, bool(item.accepted)))
        if line is not None and item.accepted is not True:
            add(Target(item, line, True, typed=True))
    return out


def build_feedback(cfg: BuildConfig) -> StageResult:
    """``codetune build RECORDS --format feedback``: the dataset folder of sft, kto and dpo rows."""
    from datasets import Dataset

    from codetune.dataset.builder import check_tokenizer, load_build_tokenizer

    opts = cfg.feedback
    if cfg.mix:
        raise ConfigError(
            "the feedback format builds its rows from the records as served (prompt, suffix, suggestion): "
            "mix does not apply; remove it"
        )
    out = default_out(cfg.out, None, "dataset")
    check_output_folder(out, stage="build")
    source = Path(cfg.corpus)  # type: ignore[arg-type]
    records = read_records(source)
    if not records.completions:
        raise InputError(
            f"no completion records in {source} ({records.counts['malformed_row']} malformed rows)"
        )
    dropped: Counter = Counter()
    labeled = records.labeled()
    found = targets(labeled, typed_after(labeled) if opts.typed else {}, dropped)
    if not found:
        raise InputError(
            f"the records in {source} have no feedback to learn from: {len(records.completions)} completion(s), "
            f"{dropped['no_feedback']} without an accept, a reject or a typed line after them (turn on "
            "editor events, see docs/editors.md)"
        )
    items = list({id(t.item): t.item for t in found}.values())
    tokenizer, seq2seq = load_build_tokenizer(cfg.model)
    check_tokenizer(tokenizer, cfg.model)
    if seq2seq:
        raise ConfigError(
            f"{cfg.model!r} is an encoder-decoder model; feedback rows are for decoder-only models"
        )
    fim_info: dict[str, Any] = {"family": None, "added": 0}
    fim = None
    if any(item.completion.suffix is not None for item in items):
        from codetune.fim import FimFormat

        fim, added = FimFormat.ensure(tokenizer)
        fim_info = {"family": fim.family.name, "added": added}
    encoder = Encoder(tokenizer, fim, cfg.max_length, opts.prefix_ratio)

    groups = prompt_groups(items, opts.pair_max_chars)
    group_docs: dict[int, dict[str, Any]] = {}
    for item, group in zip(items, groups, strict=True):
        c = item.completion
        doc = group_docs.setdefault(
            group, {"path": c.path or f"#prompt-{group}", "repo": c.client or "", "text": ""}
        )
        doc["text"] += item.target
    order = sorted(group_docs)
    plan = plan_splits(
        [group_docs[g] for g in order],
        cfg.valid_fraction,
        cfg.test_fraction,
        cfg.seed,
        cfg.split_by,
        fallback=cfg.split_fallback,
    )
    split_of = dict(zip(order, plan.labels, strict=True))
    item_split = {id(item): split_of[group] for item, group in zip(items, groups, strict=True)}

    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    wanted = set(opts.objectives)
    kinds: Counter = Counter()
    for target in found:
        item = target.item
        split = item_split[id(item)]
        c = item.completion
        encoded = encoder.rows(c.prefix, c.suffix, [Completion(target.text, target.ends)])
        if encoded is None:
            dropped["too_long"] += 1
            continue
        kinds["typed" if target.typed else ("accepted" if target.desirable else "rejected")] += 1
        if target.desirable and "sft" in wanted:
            rows[split].append(_row("sft", item, encoded, 1, c.prefix, target.text))
        if "kto" in wanted and "kto" in SPLIT_OBJECTIVES[split]:
            rows[split].append(_row("kto", item, encoded, int(target.desirable), c.prefix, target.text))
    if "dpo" in wanted:
        # The line typed where a suggestion was rejected is its pair on exactly the same prompt.
        typed_pairs = []
        for target in found:
            c = target.item.completion
            if target.typed and target.item.accepted is False:
                rejected = Completion(c.text, ends(target.item, c.text))
                typed_pairs.append(
                    (c.prefix, Completion(target.text, target.ends), rejected, c.suffix, target.item)
                )
        for prompt, chosen, rejected, suffix, good in preference_pairs(items, groups, opts) + typed_pairs:
            split = item_split[id(good)]
            if "dpo" not in SPLIT_OBJECTIVES[split]:
                continue
            if chosen.text == rejected.text:
                dropped["identical_pair"] += 1
                continue
            encoded = encoder.rows(prompt, suffix, [chosen, rejected])
            if encoded is None:
                dropped["too_long"] += 1
                continue
            rows[split].append(_row("dpo", good, encoded, 1, prompt, chosen.text))

    features = _features()
    splits = {
        split: Dataset.from_list(rows[split], features=features)
        if rows[split]
        else Dataset.from_dict({name: [] for name in features}, features=features)
        for split in SPLITS
    }
    if not any(len(part) for part in splits.values()):
        raise InputError(
            f"no rows could be built from {source}: {dict(dropped)} (raise --max-length, or give records "
            "with feedback)"
        )
    counts = {split: Counter(row[OBJECTIVE_COLUMN] for row in rows[split]) for split in SPLITS}
    labels = Counter(
        row["label"] for split in SPLITS for row in rows[split] if row[OBJECTIVE_COLUMN] == "kto"
    )
    stats_splits = {
        split: {
            "examples": len(rows[split]),
            "tokens": sum(len(r["input_ids"]) + len(r["rejected_input_ids"]) for r in rows[split]),
            **{objective: counts[split][objective] for objective in OBJECTIVES},
        }
        for split in SPLITS
    }
    objectives = {objective: sum(counts[s][objective] for s in SPLITS) for objective in OBJECTIVES}
    stats = {
        "format": NAME,
        "kind": "causal",
        "model": cfg.model,
        "max_length": cfg.max_length,
        "split_by": plan.by,
        "splits": stats_splits,
        "objectives": {**objectives, "kto_desirable": labels[1], "kto_undesirable": labels[0]},
        "split_plan": plan.report(),
        "warnings": plan.warnings,
        "dropped": {
            reason: dropped[reason]
            for reason in ("no_feedback", "empty_target", "duplicate", "too_long", "identical_pair")
        },
        "targets": {kind: kinds[kind] for kind in ("accepted", "rejected", "typed")},
        "records": records.summary(),
        "fim": fim_info,
    }
    from codetune.dataset.inputs import input_fingerprint

    manifest = {
        "stage": "build",
        "format": NAME,
        "kind": "causal",
        "model": cfg.model,
        "corpus": str(source),
        "fingerprint": fingerprint(cfg.model_dump(mode="json"), input_fingerprint(source)),
        "tokenizer": TOKENIZER,
        "vocab_size": len(tokenizer),
    }
    write_dataset(out, splits, stats, manifest, tokenizer=tokenizer)
    summary: dict[str, Any] = {f"{objective} rows": objectives[objective] for objective in OBJECTIVES}
    summary |= {
        "accepted / rejected": f"{labels[1]} / {labels[0]}",
        "dropped": sum(dropped.values()),
        "problem records": sum(records.counts.values()),
    }
    return StageResult("build", out, summary)
