"""Examples -> token ids, one encoder per kind of row (runs inside ``datasets.map``, maybe in workers).

``causal``: ``input_ids`` (EOS appended) and ``loss_mask``; a text row may become a FIM example and
any row may get repository context. ``seq2seq``: ``input_ids`` from the source, ``labels`` from the
target. Both add the columns in :data:`INTERNAL`, which the builder counts and then drops.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from codetune.dataset.formats import Batch, tokenize

# Per-row flags the builder tallies: FIM layout, trimmed, kept, syntax FIM fell back, context tokens.
INTERNAL = ["_fim", "_trimmed", "_keep", "_fallback", "_context"]


@dataclass(frozen=True)
class FimOptions:
    """How text rows become Fill-in-the-Middle examples."""

    rate: float
    spm_rate: float
    split: str  # a codetune.dataset.fim.SPLITS name
    overhead: int  # tokens a FIM row adds besides the EOS it already had (BOS, sentinels)
    syntax: dict[str, Any] = field(default_factory=dict)  # FimSyntaxOptions for the split function


@dataclass(frozen=True)
class EncodeOptions:
    """Everything an encoder needs (picklable, so worker processes get it whole)."""

    max_length: int
    max_target_length: int
    overlong: Literal["split", "trim", "drop"]
    prompted: bool
    seed: int
    fim: FimOptions | None = None  # None: no FIM
    split: str = "train"  # seeds the FIM draws per split
    context: Any = None  # the split's codetune.dataset.context.ExampleContext, or None
    bos_ids: tuple[int, ...] = ()  # what a plain (not FIM) causal row starts with

    def kept(self, trimmed: bool) -> bool:
        """Whether a row stays in the dataset (``overlong: drop`` drops trimmed ones)."""
        return not (trimmed and self.overlong == "drop")


def _rows(target: str) -> Batch:
    return {"input_ids": [], target: [], **{name: [] for name in INTERNAL}}


def _add(
    out: Batch,
    target: str,
    ids: list[int],
    labels: list[int],
    opts: EncodeOptions,
    *,
    trimmed: bool,
    layout: str = "",
    fallback: bool = False,
    context: int = 0,
) -> None:
    out["input_ids"].append(ids)
    out[target].append(labels)
    out["_context"].append(context)
    out["_fim"].append(layout)
    out["_trimmed"].append(trimmed)
    out["_keep"].append(opts.kept(trimmed))
    out["_fallback"].append(fallback)


# --- causal --------------------------------------------------------------------------------------------


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


def encode_causal(batch: Batch, indices: list[int], *, tokenizer: Any, opts: EncodeOptions) -> Batch:
    """input_ids (EOS appended) and loss_mask per row; text rows may become FIM examples."""
    if opts.prompted:
        return _encode_prompted(batch, tokenizer, opts)
    return _encode_texts(batch, indices, tokenizer, opts)


def _encode_prompted(batch: Batch, tokenizer: Any, opts: EncodeOptions) -> Batch:
    """Prompt/completion rows: loss on the completion and EOS; context goes before the prompt."""
    from codetune.dataset.context import fit

    eos, limit, chooser = tokenizer.eos_token_id, opts.max_length, opts.context
    out = _rows("loss_mask")
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
            fitted = found and fit(found, limit, chooser.budget, len(ids), chooser.prompted, prompt, c, eos)
            if fitted:
                added = len(fitted[0]) - len(ids)
                ids, mask = fitted[0], fitted[1]
        _add(out, "loss_mask", ids, mask, opts, trimmed=trimmed, context=added)
    return out


@dataclass
class _FimPlan:
    """One text row's FIM cut: its layout, its pieces, their ids when sliced from the text's own."""

    layout: str
    pieces: Any  # codetune.fim.FimPieces
    sliced: tuple[list[int], list[int], list[int]] | None
    fallback: bool
    cut_short: bool


def _plan_fim(
    text: str,
    offsets: list,
    ids: list[int],
    rng: random.Random,
    info: dict,
    tokenizer: Any,
    room: int,
    fim: FimOptions,
) -> _FimPlan | None:
    """Where one text row is cut into prefix, middle and suffix (None: it stays left to right)."""
    from codetune.dataset.fim import SPLITS as FIM_SPLITS
    from codetune.dataset.fim import choose, cut, token_starts

    layout = choose(rng, fim.rate, fim.spm_rate)
    if layout is None:
        return None
    cut_short = len(offsets) > room
    if cut_short:
        # Over the limit (a trimmed format): FIM the part that fits, counted as trimmed.
        offsets = offsets[: max(room, 1)]
        text = text[: offsets[-1][1]]
    info = {**info, "offsets": token_starts(offsets)}
    span = FIM_SPLITS[fim.split](text, rng, info)
    token_at = _token_at(offsets)
    if span is not None and token_at and not (span[0] in token_at and span[1] in token_at):
        # Pieces cut inside a token are tokenized apart, which can take more tokens than the
        # text did: fall back to token boundaries when they would no longer fit.
        apart = cut(text, *span)
        encoded_apart = tokenize(tokenizer, [apart.prefix, apart.middle, apart.suffix])
        if sum(len(piece) for piece in encoded_apart["input_ids"]) > room:
            span = FIM_SPLITS[fim.split](text, rng, {**info, "aligned": True})
    fallback = span is None
    if span is None:
        span = FIM_SPLITS["random"](text, rng, info)
    pieces = cut(text, *span)
    sliced = None
    if span[0] in token_at and span[1] in token_at:
        # Cut on token boundaries: slice the ids instead of tokenizing the pieces again.
        ids, a, b = ids[: len(offsets)], token_at[span[0]], token_at[span[1]]
        sliced = (ids[:a], ids[a:b], ids[b:])
    return _FimPlan(layout, pieces, sliced, fallback, cut_short)


def _encode_texts(batch: Batch, indices: list[int], tokenizer: Any, opts: EncodeOptions) -> Batch:
    """Text rows: loss on every token; a ``fim.rate`` share of them become FIM examples."""
    from codetune.fim import FimFormat

    eos, limit, texts, fim = tokenizer.eos_token_id, opts.max_length, batch["text"], opts.fim
    fim_format = FimFormat.from_tokenizer(tokenizer) if fim is not None else None
    encoded = tokenize(tokenizer, texts, offsets=fim is not None)
    plans: list[_FimPlan | None] = [None] * len(texts)
    if fim is not None:
        # A FIM row holds the text's tokens plus the sentinels; blocks were cut with room for them.
        room = limit - 1 - fim.overhead
        for row, text in enumerate(texts):
            rng = random.Random(f"{opts.seed}:{opts.split}:{indices[row]}")
            info = {"language": batch["language"][row], "path": batch["path"][row], **fim.syntax}
            offsets, ids = encoded["offset_mapping"][row], encoded["input_ids"][row]
            plans[row] = _plan_fim(text, offsets, ids, rng, info, tokenizer, room, fim)
    piece_ids = _encode_pieces(fim_format, [p for p in plans if p is not None and p.sliced is None])
    if opts.context is not None:
        rows = [(batch["repo"][row], batch["path"][row]) for row in range(len(texts))]
        opts.context.prepare(
            [
                (*rows[row], texts[row], encoded["input_ids"][row])
                for row, plan in enumerate(plans)
                if plan is None
            ],
            [(*rows[row], plan.pieces.prefix) for row, plan in enumerate(plans) if plan is not None],
            fim_format,
        )
    laid: list[tuple[list[int], int, tuple | None, bool]] = []  # ids, end, FIM pieces, trimmed
    for row, plan in enumerate(plans):
        end, pieces = eos, None
        if plan is None:
            ids = [*opts.bos_ids, *encoded["input_ids"][row]]
        else:
            assert fim_format is not None
            pieces = plan.sliced or piece_ids(plan.pieces)
            # The family's end-of-middle token takes the place of EOS.
            *ids, end = fim_format.example_ids(*pieces, spm=plan.layout == "spm")
        trimmed = len(ids) + 1 > limit or (plan is not None and plan.cut_short)
        laid.append((ids[: limit - 1] if trimmed else ids, end, pieces, trimmed))
    found: list[Any] = [None] * len(plans)
    if opts.context is not None:
        for row, (ids, _, _, trimmed) in enumerate(laid):
            if not trimmed:
                found[row] = _choose_context(opts.context, batch, row, plans[row], limit - len(ids) - 1)
        opts.context.warm(found)  # the chosen snippets tokenized in one batch
    out = _rows("loss_mask")
    for row, (ids, end, pieces, trimmed) in enumerate(laid):
        plan = plans[row]
        row_ids, mask = [*ids, end], [1] * (len(ids) + 1)
        added = 0
        if found[row]:
            fitted = _fit_context(
                opts.context, found[row], texts[row], plan, pieces, fim_format, ids, len(row_ids), limit, eos
            )
            if fitted:
                added = len(fitted[0]) - len(row_ids)
                row_ids, mask = fitted[0], fitted[1]
        layout = "" if plan is None else plan.layout
        fallback = plan is not None and plan.fallback
        _add(
            out,
            "loss_mask",
            row_ids,
            mask,
            opts,
            trimmed=trimmed,
            layout=layout,
            fallback=fallback,
            context=added,
        )
    return out


def _encode_pieces(fim_format: Any, plans: list[_FimPlan]) -> Callable[[Any], tuple[list, list, list]]:
    """Token ids of the FIM pieces not sliced from their text's ids, each distinct piece tokenized once.

    Prefixes keep the tokenizer's leading space, middles and suffixes do not (codetune.fim).
    """
    prefixes = sorted({plan.pieces.prefix for plan in plans})
    infills = sorted({piece for plan in plans for piece in (plan.pieces.middle, plan.pieces.suffix)})
    prefix_ids: dict[str, list[int]] = {}
    infill_ids: dict[str, list[int]] = {}
    if plans:
        prefix_ids = dict(zip(prefixes, fim_format.encode_many(prefixes), strict=True))
        infill_ids = dict(zip(infills, fim_format.encode_many(infills, infill=True), strict=True))

    def ids_of(pieces: Any) -> tuple[list, list, list]:
        return prefix_ids[pieces.prefix], infill_ids[pieces.middle], infill_ids[pieces.suffix]

    return ids_of


def _choose_context(chooser: Any, batch: Batch, row: int, plan: _FimPlan | None, room: int) -> Any:
    """The repository context for row ``row`` within ``room`` tokens, or None."""
    repo, path, text = batch["repo"][row], batch["path"][row], batch["text"][row]
    if plan is None:
        return chooser.choose(repo, path, text, "", room, whole=True)
    return chooser.choose(repo, path, plan.pieces.prefix, plan.pieces.suffix, room)


def _fit_context(
    chooser: Any,
    found: Any,
    text: str,
    plan: _FimPlan | None,
    pieces: tuple[list[int], list[int], list[int]] | None,
    fim_format: Any,
    ids: list[int],
    base: int,
    limit: int,
    eos: int,
) -> Any:
    """A row laid out with as much of its context ``found`` as fits (ids, mask, context), or None.

    ``ids`` are the tokens of its ``text`` (a plain row), ``pieces`` its FIM pieces' (a FIM row);
    ``base`` is its length without context.
    """
    from codetune.dataset.context import fit

    if plan is None:
        return fit(found, limit, chooser.budget, base, chooser.plain, text, ids, eos)
    spm = plan.layout == "spm"
    return fit(found, limit, chooser.budget, base, chooser.fim, fim_format, plan.pieces.prefix, pieces, spm)


def encode_seq2seq(batch: Batch, indices: list[int], *, tokenizer: Any, opts: EncodeOptions) -> Batch:
    """input_ids from the source, labels from the target, each ending in EOS."""
    eos = tokenizer.eos_token_id
    limit, target_limit = opts.max_length, opts.max_target_length
    sources = tokenize(tokenizer, batch["source"])["input_ids"]
    targets = tokenize(tokenizer, batch["target"])["input_ids"]
    out = _rows("labels")
    for s, t in zip(sources, targets, strict=True):
        trimmed = len(s) + 1 > limit or len(t) + 1 > target_limit
        _add(out, "labels", [*s[: limit - 1], eos], [*t[: target_limit - 1], eos], opts, trimmed=trimmed)
    return out


# One encoder per kind of row (codetune.dataset.formats.base.Kind).
ENCODERS: dict[str, Callable[..., Batch]] = {"causal": encode_causal, "seq2seq": encode_seq2seq}
