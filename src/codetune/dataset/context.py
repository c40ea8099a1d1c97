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
from codetune.context.index import index_repositories
from codetune.fim import FimFormat, context_ids

# An example with less room than this left gets no context (a path line and a few tokens of code).
MIN_ROOM = 8

# Markers standing in for ids when laying out a FIM example's loss mask (ids are never negative).
_CONTEXT, _TEXT = -1, -2
# Tokenized snippets kept for reuse (the same snippets serve many examples of a repository); the
# cache starts over past this many, so a huge corpus does not hold every snippet's ids at once.
CACHE_ENTRIES = 20_000


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

    @property
    def budget(self) -> int:
        """Most tokens of context one example may carry."""
        return self.options.budget_tokens

    def count(self, text: str) -> int:
        """Tokens of ``text`` (cached: the same snippets are priced for many examples)."""
        if text not in self._counts:
            self._counts[text] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._counts[text]

    def head_ids(self, rendered: RenderedContext) -> list[int]:
        """Ids of a rendered context's head (``codetune.fim.context_ids``), each snippet tokenized once."""
        if len(self._pieces) > CACHE_ENTRIES:
            self._pieces.clear()
        return context_ids(self.tokenizer, rendered, self._pieces)

    def text_ids(self, text: str, fmt: FimFormat | None = None) -> list[int]:
        """Tokens of an example's text with its lead (as a FIM prefix with ``fmt``): the same for every
        count of snippets :func:`fit` tries, so tokenized once."""
        key = f"{'fim' if fmt else ''}\0{text}"
        if key not in self._texts:
            if len(self._texts) > 4:
                self._texts.clear()
            self._texts[key] = fmt.encode(text) if fmt else _tokens(self.tokenizer, text)
        return self._texts[key]

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

        def cost(framed: str) -> int:
            key = f"{extension}\0{framed}"
            if key not in self._counts:
                snippet_path, _, text = framed.partition("\n")
                self._counts[key] = self.length(RepoContext((Snippet(snippet_path, text, ""),), extension))
            return self._counts[key]

        snippets = build_context(index, path, prefix, suffix, count_tokens=cost, options=options)
        return RepoContext(tuple(snippets), path, repo) if snippets else None

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


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def split_contexts(
    tokenizer: Any, parts: dict[str, list[dict[str, Any]]], options: ContextOptions
) -> dict[str, ExampleContext]:
    """One chooser per split. Train sees train files only; a held-out split sees train files and its
    own (never another held-out split's), so no valid or test file reaches a training example."""
    out = {}
    analysed: dict = {}  # each file is parsed and chunked once, for all three splits' indexes
    counts: dict[str, int] = {}  # a snippet's price is the same in every split: priced once
    for split, docs in parts.items():
        allowed = list(parts["train"]) + ([] if split == "train" else list(docs))
        held: dict[str, set[str]] = {}
        for other, other_docs in parts.items():
            if other not in ("train", split):
                for doc in other_docs:
                    held.setdefault(str(doc.get("repo") or ""), set()).add(doc["path"])
        indexes = index_repositories(_rows(allowed), analysed=analysed)
        held_out = {repo: frozenset(paths) for repo, paths in held.items()}
        out[split] = ExampleContext(tokenizer, indexes, held_out, options, _counts=counts)
    return out


def _rows(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"repo": d.get("repo") or "", "path": d["path"], "text": d["text"]} for d in docs]
