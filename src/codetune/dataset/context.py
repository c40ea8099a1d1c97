"""Repository context for build examples: the snippets serving would give, laid out the same way.

Each example gets context from other files of its own repository, chosen by ``codetune.context``
around the example's cursor (a FIM middle, the end of a prompt, or the whole text of a file row)
and rendered with ``codetune.context.render_for``, the function ``build_request`` uses, so a PSM
example starts with exactly the ids a served request sends. The indexes hold only the files a split
may see (train files; a held-out split also its own), and the held-out paths are excluded again at
query time. Context is cut first: whole snippets, the last first, until the example fits
``max_length``. Context tokens carry no loss: they are other files, already trained on as themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

from codetune.context import (
    ContextOptions,
    RenderedContext,
    RepoContext,
    RepoIndex,
    Snippet,
    build_context,
    render_for,
)
from codetune.context.index import Analyses, index_repositories
from codetune.fim import FimFormat, context_ids, repo_layout

# An example with less room than this left gets no context (a path line and a few tokens of code).
MIN_ROOM = 8

# Markers standing in for ids when laying out a FIM example's loss mask (ids are never negative).
_CONTEXT, _TEXT = -1, -2
# Tokenized texts kept for reuse (the same snippets serve many examples of a repository); past this
# many a cache drops its older half, so a huge corpus does not hold every snippet's ids at once.
CACHE_ENTRIES = 16_384
# Snippets (or files) tokenized in one call when a repository is first priced.
PRICE_BATCH = 2_048
FILE_BATCH = 64


@dataclass
class ExampleContext:
    """Chooses and lays out context for the examples of one split (picklable for ``datasets.map``)."""

    tokenizer: Any
    indexes: dict[str, RepoIndex]
    held_out: dict[str, frozenset[str]]
    options: ContextOptions
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    # head text piece -> ids (codetune.fim.context_ids), and the last few texts tokenized with a lead
    _pieces: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _texts: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _leads: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _leads_ids: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _joins: bool | None = field(default=None, repr=False)
    _priced: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _spans: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict, repr=False)

    @property
    def budget(self) -> int:
        """Most tokens of context one example may carry."""
        return self.options.budget_tokens

    def count(self, text: str) -> int:
        """Tokens of ``text`` (cached: the same snippets are priced for many examples)."""
        if text not in self._counts:
            self._counts[text] = len(
                self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            )
        return self._counts[text]

    def head_ids(self, rendered: RenderedContext) -> list[int]:
        """Ids of a rendered context's head (``codetune.fim.context_ids``), each snippet tokenized once."""
        _bound(self._pieces)
        return context_ids(self.tokenizer, rendered, self._pieces)

    def warm(self, contexts: list[RepoContext | None]) -> None:
        """Tokenize in one batch the snippets of ``contexts`` that :meth:`head_ids` has not seen."""
        _bound(self._pieces)
        new = {
            piece: None
            for context in contexts
            if context
            for piece, is_token in render_for(self.tokenizer, context).head
            if not is_token and piece not in self._pieces
        }
        if new:
            context_ids(self.tokenizer, RenderedContext(tuple((piece, False) for piece in new)), self._pieces)

    def text_ids(self, text: str, fmt: FimFormat | None = None) -> list[int]:
        """Tokens of an example's text with its lead (as a FIM prefix with ``fmt``): the same for every
        count of snippets :func:`fit` tries, so tokenized once."""
        key = f"{'fim' if fmt else ''}\0{text}"
        if key not in self._texts:
            _bound(self._texts)
            self._texts[key] = fmt.encode(text) if fmt else _tokens(self.tokenizer, text)
        return self._texts[key]

    def prepare(
        self,
        plain: list[tuple[str, str, str, list[int]]],
        fim: list[tuple[str, str, str]],
        fmt: FimFormat | None,
    ) -> None:
        """Tokenize in one batch each what laying out a batch of examples asks :meth:`text_ids` for:
        each (repo, path, text, its own ids) of ``plain`` with its lead, each (repo, path, prefix) of
        ``fim`` as a FIM prefix after its lead. Only for a family whose layout puts the target's path
        there, so the lead does not depend on which snippets are chosen. Where the tokenizer keeps
        the tokens of a text that starts a line (:func:`_joins_after_newline`), a plain row's are
        its lead's and its own, tokenized once."""
        self._texts.clear()
        if repo_layout(self.tokenizer) is None:
            return
        joins = self._joins
        if joins is None:
            joins = self._joins = _joins_after_newline(self.tokenizer)
        for rows, use in ((plain, None), (fim, fmt)):
            texts = []
            for repo, path, text, *own in rows:
                lead = self._lead(repo, path)
                if not lead:
                    continue
                if own and joins and lead.endswith("\n") and _starts_a_line_plainly(text):
                    self._texts[f"\0{lead}{text}"] = [*self._lead_ids(lead), *own[0]]
                else:
                    texts.append(f"{lead}{text}")
            if not texts:
                continue
            encoded = (
                use.encode_many(texts)
                if use
                else self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            )
            for text, ids in zip(texts, encoded, strict=True):
                self._texts[f"{'fim' if use else ''}\0{text}"] = list(ids)

    def _lead_ids(self, lead: str) -> list[int]:
        if lead not in self._leads_ids:
            _bound(self._leads_ids)
            self._leads_ids[lead] = _tokens(self.tokenizer, lead)
        return self._leads_ids[lead]

    def _lead(self, repo: str, path: str) -> str:
        if (repo, path) not in self._leads:
            _bound(self._leads)
            context = RepoContext((Snippet(path, "", ""),), path, repo)
            self._leads[(repo, path)] = render_for(self.tokenizer, context).lead
        return self._leads[(repo, path)]

    def choose(
        self, repo: str, path: str, prefix: str, suffix: str, room: int, *, whole: bool = False
    ) -> RepoContext | None:
        """Snippets for a cursor between ``prefix`` and ``suffix`` of ``path``, within ``room`` tokens."""
        budget = min(self.options.budget_tokens, room)
        index = self.indexes.get(repo or "")
        if budget < MIN_ROOM or index is None:
            return None
        # Snippets are priced as rendered alone (repository tokens, comment markers, a frame each, so
        # a little over); the names in the frame are paid once, here.
        names = self.count(f"{repo}\n") + self.count(f"{path}\n")
        options = replace(
            self.options,
            budget_tokens=budget - names,
            exclude=self.held_out.get(repo or "", frozenset()),
        )
        if whole:  # a whole-file row: every line is near its "cursor"
            options = replace(options, query_lines=prefix.count("\n") + 1)

        extension = path[path.rfind(".") :]
        snippets = build_context(
            index,
            path,
            prefix,
            suffix,
            count_tokens=lambda framed: self.prices(extension, [framed], repo or "")[0],
            count_many=lambda framed: self.prices(extension, framed, repo or ""),
            options=options,
        )
        return RepoContext(tuple(snippets), path, repo) if snippets else None

    def prices(self, extension: str, framed: list[str], repo: str = "") -> list[int]:
        """Tokens each framed snippet (``path\\ntext\\n``) takes rendered alone before a target with
        ``extension``, a little over its share of a context (:meth:`_price_repository` prices all of
        a repository's at once, the first time it is asked about)."""
        if (repo, extension) not in self._priced and repo in self.indexes:
            self._priced.add((repo, extension))
            self._price_repository(self.indexes[repo], extension)
        self._price(extension, framed)
        return [self._counts[f"{extension}\0{one}"] for one in framed]

    def _price_repository(self, index: RepoIndex, extension: str) -> None:
        """Price every chunk and definition of a repository from one tokenization of its files.

        A snippet is a span of its file: it costs the tokens of that span plus what its frame costs
        (the path line, the repository tokens; priced exactly per file). Tokenizing each file once
        costs a third of tokenizing every (overlapping) chunk and definition, and a span's tokens
        differ from the snippet's own by a token or two where the span is cut; ``fit`` checks the
        real total. For a layout of comment headers (no repository tokens) every line gets a marker,
        so there the snippets are tokenized themselves, in batches.
        """
        snippets = index.snippets()
        if repo_layout(self.tokenizer) is None:
            framed = [f"{path}\n{text}\n" for path, text in snippets]
            for start in range(0, len(framed), PRICE_BATCH):
                self._price(extension, framed[start : start + PRICE_BATCH])
            return
        paths = sorted(index.files)
        self._price(extension, [f"{path}\n\n" for path in paths])  # the frame of an empty snippet
        for (path, snippet), tokens in self._span_tokens(index).items():
            key = f"{extension}\0{path}\n{snippet}\n"
            if key not in self._counts:
                self._counts[key] = self._counts[f"{extension}\0{path}\n\n"] + tokens

    def _span_tokens(self, index: RepoIndex) -> dict[tuple[str, str], int]:
        """(path, snippet) -> tokens of the snippet's span in its file, each file tokenized once (or
        not at all, where cutting it into blocks tokenized it: ``kept_token_spans``)."""
        import numpy as np

        from codetune.dataset.formats.base import kept_token_spans

        if index.name in self._spans:
            return self._spans[index.name]
        by_path: dict[str, list[str]] = {}
        for path, text in index.snippets():
            by_path.setdefault(path, []).append(text)
        bounds = {path: kept_token_spans(index.files[path]) for path in by_path}
        todo = sorted(path for path, kept in bounds.items() if kept is None)
        for start in range(0, len(todo), FILE_BATCH):
            batch = todo[start : start + FILE_BATCH]
            texts = [index.files[path] for path in batch]
            offsets = self.tokenizer(
                texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )["offset_mapping"]
            for path, spans in zip(batch, offsets, strict=True):
                found = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
                bounds[path] = (found[:, 0], found[:, 1])
        priced: dict[tuple[str, str], int] = {}
        for path, snippets in by_path.items():
            text, (starts, ends) = index.files[path], bounds[path]
            located, hint = [], 0
            for snippet in snippets:
                where = text.find(snippet, hint)
                where = where if where >= 0 else text.find(snippet)
                if where >= 0:
                    hint = where
                    located.append((snippet, where))
            if not located:
                continue
            first = np.asarray([where for _, where in located], dtype=np.int64)
            last = first + np.asarray([len(snippet) for snippet, _ in located], dtype=np.int64)
            # the tokens that overlap the span: starting before its end and ending after its start
            counts = np.searchsorted(starts, last, "left") - np.searchsorted(ends, first, "right")
            for (snippet, _), count in zip(located, counts.tolist(), strict=True):
                priced[(path, snippet)] = count
        self._spans[index.name] = priced
        return priced

    def _price(self, extension: str, framed: list[str]) -> None:
        """Price the snippets of ``framed`` not priced yet, tokenizing them in one batch."""
        new = [one for one in dict.fromkeys(framed) if f"{extension}\0{one}" not in self._counts]
        if not new:
            return
        rendered = []
        for one in new:
            snippet_path, _, text = one.partition("\n")
            rendered.append(
                render_for(self.tokenizer, RepoContext((Snippet(snippet_path, text, ""),), extension))
            )
        pieces: dict[str, list[int]] = {}
        # one head of every text piece: context_ids tokenizes them in one batch into ``pieces``
        texts = tuple((piece, False) for one in rendered for piece, is_token in one.head if not is_token)
        context_ids(self.tokenizer, RenderedContext(texts), pieces)
        leads = sorted({one.lead for one in rendered if one.lead and one.lead not in self._counts})
        if leads:
            counted = self.tokenizer(leads, add_special_tokens=False, verbose=False)["input_ids"]
            self._counts.update((lead, len(ids)) for lead, ids in zip(leads, counted, strict=True))
        for one, alone in zip(new, rendered, strict=True):
            lead = self._counts[alone.lead] if alone.lead else 0
            self._counts[f"{extension}\0{one}"] = len(context_ids(self.tokenizer, alone, pieces)) + lead

    def length(self, context: RepoContext) -> int:
        """Tokens of a rendered context, about (the lead is counted apart from the prefix it opens)."""
        rendered = render_for(self.tokenizer, context)
        return len(self.head_ids(rendered)) + (self.count(rendered.lead) if rendered.lead else 0)

    # --- layouts: (ids, loss mask) of one example with a context ------------------------------------

    def plain(self, context: RepoContext, text: str, text_ids: list[int], end: int) -> tuple[list, list]:
        """A left-to-right text row: the context, then the text (as a plain request sends a prompt)."""
        rendered = render_for(self.tokenizer, context)
        head = self.head_ids(rendered)
        body = self.text_ids(rendered.lead + text) if rendered.lead else text_ids
        lead = max(len(body) - len(text_ids), 0)
        return [*head, *body, end], [0] * (len(head) + lead) + [1] * (len(body) - lead + 1)

    def prompted(
        self, context: RepoContext, prompt: str, completion_ids: list[int], end: int
    ) -> tuple[list, list]:
        """A prompt/completion row: the context before the prompt; loss on the completion only."""
        rendered = render_for(self.tokenizer, context)
        head = self.head_ids(rendered)
        body = self.text_ids(rendered.lead + prompt)
        return [*head, *body, *completion_ids, end], [0] * (len(head) + len(body)) + [1] * (
            len(completion_ids) + 1
        )

    def fim(
        self,
        context: RepoContext,
        fmt: FimFormat,
        prefix: str,
        ids: tuple[list[int], list[int], list[int]],
        spm: bool,
    ) -> tuple[list, list]:
        """A FIM row laid out by ``FimFormat.example_ids`` with the rendered context, as serving's
        ``FimFormat.prompt`` lays out the prompt; the context's tokens (head and lead) are masked."""
        rendered = render_for(self.tokenizer, context)
        head = self.head_ids(rendered)  # fmt.context_ids(rendered), cached
        p, m, s = ids
        if rendered.lead:
            with_lead = self.text_ids(rendered.lead + prefix, fmt)
            lead = max(len(with_lead) - len(p), 0)
            p = with_lead
        else:
            lead = 0
        out = fmt.example_ids(p, m, s, spm=spm, head=head)
        marks = fmt.example_ids(
            [_CONTEXT] * lead + [_TEXT] * (len(p) - lead),
            [_TEXT] * len(m),
            [_TEXT] * len(s),
            spm=spm,
            head=[_CONTEXT] * len(head),
        )
        return out, [0 if mark == _CONTEXT else 1 for mark in marks]


def fit(
    context: RepoContext,
    limit: int,
    budget: int,
    base: int,
    layout: Callable[..., tuple[list, list]],
    *args: Any,
) -> tuple[list, list, RepoContext] | None:
    """``layout(context, *args)`` with as many snippets as fit: at most ``limit`` tokens in all and
    ``budget`` more than the ``base`` tokens of the example without context (the last dropped first)."""
    for count in range(len(context.snippets), 0, -1):
        kept = context.keep(count)
        ids, mask = layout(kept, *args)
        if len(ids) <= limit and len(ids) - base <= budget:
            return ids, mask, kept
    return None


# The pre-tokenizer regexes (GPT-2's, built into ByteLevel, and Llama 3's / Qwen 2's, as a Split) under
# which no piece holding a newline goes on past it into a printable ASCII character: the pieces of
# a text after a newline are those of the text alone.
_NEWLINE_SAFE_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
_PROBES = ("x = 1", "(a, b)", "'s x", "1 23", "#!x", "end", "}\n", "<a>")


def _joins_after_newline(tokenizer: Any) -> bool:
    """Whether ``tokens(lead + text) == tokens(lead) + tokens(text)`` for every lead ending in a
    newline and text starting with a printable ASCII character other than a space: a byte-level
    BPE whose pre-tokenizer splits there (a regex of :data:`_NEWLINE_SAFE_SPLITS`), with no
    normalizer that could join across it and no added token holding a newline. Checked on probes too."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    if (spec.get("normalizer") or {}).get("type", "NFC") != "NFC":
        return False
    if any("\n" in token.get("content", "") for token in spec.get("added_tokens") or []):
        return False
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not steps or steps[-1].get("type") != "ByteLevel" or steps[-1].get("add_prefix_space"):
        return False
    splits = steps[:-1]
    if steps[-1].get("use_regex"):
        safe = not splits
    else:
        safe = (
            len(splits) == 1
            and splits[0].get("type") == "Split"
            and splits[0].get("behavior") == "Isolated"
            and (splits[0].get("pattern") or {}).get("Regex") in _NEWLINE_SAFE_SPLITS
        )
    if not safe:
        return False
    lead = "src/a.py\n"
    joined = _tokens(tokenizer, lead)
    return all(_tokens(tokenizer, lead + probe) == joined + _tokens(tokenizer, probe) for probe in _PROBES)


def _starts_a_line_plainly(text: str) -> bool:
    return "!" <= text[:1] <= "~"


def _bound(cache: dict) -> None:
    """Drop the older half of ``cache`` once it holds more than ``CACHE_ENTRIES``."""
    if len(cache) > CACHE_ENTRIES:
        for key in list(islice(cache, len(cache) // 2)):
            del cache[key]


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) if text else []


def split_contexts(
    tokenizer: Any, parts: dict[str, list[dict[str, Any]]], options: ContextOptions
) -> dict[str, ExampleContext]:
    """One chooser per split. Train sees train files only; a held-out split sees train files and its
    own (never another held-out split's), so no valid or test file reaches a training example."""
    out = {}
    analysed = Analyses()  # each file is parsed and chunked once, for all three splits' indexes
    counts: dict[str, int] = {}  # a snippet's price is the same in every split: priced once
    priced: set[tuple[str, str]] = set()
    spans: dict[str, dict[tuple[str, str], int]] = {}
    for split, docs in parts.items():
        allowed = list(parts["train"]) + ([] if split == "train" else list(docs))
        held: dict[str, set[str]] = {}
        for other, other_docs in parts.items():
            if other not in ("train", split):
                for doc in other_docs:
                    held.setdefault(str(doc.get("repo") or ""), set()).add(doc["path"])
        indexes = index_repositories(_rows(allowed), analysed=analysed)
        # only what the index holds can be chosen: the rest need not be checked on every query
        held_out = {
            repo: frozenset(paths & indexes[repo].files.keys())
            for repo, paths in held.items()
            if repo in indexes
        }
        out[split] = ExampleContext(
            tokenizer, indexes, held_out, options, _counts=counts, _priced=priced, _spans=spans
        )
    return out


def _rows(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"repo": d.get("repo") or "", "path": d["path"], "text": d["text"]} for d in docs]
