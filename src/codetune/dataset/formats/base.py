"""What every dataset format declares and does; each format is one file beside this one.

A format declares the kind of row it makes (``causal``: ``text`` or ``prompt``/``completion``;
``seq2seq``: ``source``/``target``), whether its rows are files of a repository (so repository
context applies) and what its long texts leave room for when they are cut into blocks (FIM
sentinels, repository context). It reads its documents and turns a batch of them into a batch of
examples (``datasets.map(batched=True)`` calls :meth:`Format.examples`, possibly in workers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from codetune.dataset.config import BuildConfig
from codetune.dataset.inputs import read_corpus_docs

Batch = dict[str, list[Any]]
Kind = Literal["causal", "seq2seq"]
Reserve = Literal["fim", "context"]
# Columns a row carries besides its example text(s): where it came from.
ORIGIN = ("path", "repo", "language")


class Format:
    """Base of every format; a subclass sets the class variables below and :meth:`examples`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "causal"
    # Rows are prompt -> completion (loss on the completion only) rather than one text.
    prompted: bool = False
    # Rows are files, or parts of files, of a repository: repository context can be added to them.
    repo_context: ClassVar[bool] = True
    # What a long text's blocks leave room for (tokens added to a row after its text is cut).
    reserves: ClassVar[tuple[Reserve, ...]] = ()
    # A text is a whole (a syntax unit) that a row should hold: the build warns when it cuts some.
    warn_split: ClassVar[bool] = False

    def __init__(self, cfg: BuildConfig) -> None:
        self.cfg = cfg
        # Tokens the builder adds to a row after the format cut it (the sum of ``reserves``).
        self.reserve_tokens = 0
        # Records the format read but could not use, by reason (seq2seq records without a target,
        # instruct fields that are not text); stats.json counts them under ``dropped``.
        self.dropped: Counter[str] = Counter()

    def load(self, path: Path) -> list[dict[str, Any]]:
        """Documents with at least text, path, repo, language."""
        return read_corpus_docs(path)

    def build_dataset(self) -> Any:
        """The whole dataset folder (a StageResult), for a format whose rows are not documents cut and
        encoded one by one (``feedback``: records joined to their events, then paired); None for the
        others, which the builder runs through setup -> split -> encode -> write."""
        return None

    def check(self, docs: list[dict[str, Any]]) -> None:
        """Fail early on inputs this format cannot use."""

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        """A batch of examples (:meth:`columns`) from a batch of documents."""
        raise NotImplementedError

    @property
    def room(self) -> int:
        """Tokens one row's text may take before EOS: ``max_length`` less what the builder adds."""
        return self.cfg.max_length - self.reserve_tokens

    def columns(self) -> list[str]:
        """The example columns :meth:`examples` returns."""
        if self.kind == "seq2seq":
            return ["source", "target", "path", "repo"]
        base = ["text", *ORIGIN]
        return [*base, "prompt", "completion"] if self.prompted else base

    def features(self) -> Any:
        """The columns (and types) of a finished split of this format."""
        from datasets import Features, Sequence, Value

        if self.kind == "seq2seq":
            spec = {"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))}
            spec |= {name: Value("string") for name in ("source", "target", "path", "repo")}
            return Features(spec)
        spec = {"input_ids": Sequence(Value("int32")), "loss_mask": Sequence(Value("int8"))}
        spec |= {name: Value("string") for name in ("text", "path", "repo")}
        if self.prompted:
            spec |= {"prompt": Value("string"), "completion": Value("string")}
        return Features(spec)


def tokenize(tokenizer: Any, texts: list[str], *, offsets: bool = False) -> Any:
    """Batch-tokenize texts without special tokens.

    Texts longer than the model's maximum are expected here (they are cut into blocks or trimmed
    afterwards), so transformers' "sequence length is longer than the maximum" warning is off.
    """
    return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=offsets, verbose=False)


# Most token boundaries of whole documents kept at once (two integers each) by keeping_token_spans.
KEPT_TOKENS = 16_000_000


@dataclass
class _Kept:
    spans: dict[str, tuple[Any, Any]] | None = None
    tokens: int = 0


_KEPT = _Kept()


@contextmanager
def keeping_token_spans() -> Iterator[None]:
    """While it lasts, the token boundaries of whole documents tokenized to cut them into blocks are
    kept (in this process, up to ``KEPT_TOKENS``), so that pricing repository context by spans of
    files (codetune.dataset.context) need not tokenize every file again."""
    before = (_KEPT.spans, _KEPT.tokens)
    _KEPT.spans, _KEPT.tokens = {}, 0
    try:
        yield
    finally:
        _KEPT.spans, _KEPT.tokens = before


def keep_token_spans(texts: list[str], offsets: list[Any]) -> None:
    """Keep the (start, end) character offsets of each text's tokens, while :func:`keeping_token_spans`."""
    if _KEPT.spans is None:
        return
    import numpy as np

    for text, spans in zip(texts, offsets, strict=True):
        if _KEPT.tokens + len(spans) > KEPT_TOKENS:
            return
        found = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        _KEPT.spans[text] = (found[:, 0], found[:, 1])
        _KEPT.tokens += len(spans)


def kept_token_spans(text: str) -> tuple[Any, Any] | None:
    """The token starts and ends kept for ``text`` (arrays), if it was tokenized whole while kept."""
    return None if _KEPT.spans is None else _KEPT.spans.get(text)


def empty(columns: list[str]) -> Batch:
    """A batch with no rows."""
    return {name: [] for name in columns}


def origin(out: Batch, batch: Batch, row: int) -> None:
    """Append document ``row``'s path, repo and language to ``out``."""
    for name in ORIGIN:
        out[name].append(batch[name][row])
