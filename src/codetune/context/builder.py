"""Choose the context for one cursor: editor snippets, imports and definitions, then BM25 chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codetune.context.index import IDENTIFIER, RepoIndex

STRATEGIES = ("client", "imports", "definitions", "bm25")


@dataclass(frozen=True)
class Snippet:
    """One piece of context: where it comes from and its text."""

    path: str
    text: str
    source: str  # client, imports, definitions, bm25
    # how well it matched, where its source scores: the Okapi BM25 score of a bm25 chunk, the score an
    # editor or a benchmark sent with its snippet; None for imports and definitions (found, not ranked)
    score: float | None = None


@dataclass(frozen=True)
class RepoContext:
    """The context of one prompt: snippets of other files, the file being completed, its repository."""

    snippets: tuple[Snippet, ...]
    target_path: str = ""
    repo_name: str = ""

    def keep(self, count: int) -> RepoContext:
        """The same context with only its first ``count`` snippets (the last ones matter least)."""
        return RepoContext(self.snippets[:count], self.target_path, self.repo_name)


@dataclass(frozen=True)
class ContextOptions:
    """How much context, from where."""

    budget_tokens: int = 512
    strategies: tuple[str, ...] = STRATEGIES
    query_lines: int = 12  # lines around the cursor that make the BM25 query
    max_file_tokens: int = 256  # an imported file longer than this contributes its definitions only
    bm25_chunks: int = 8
    exclude: frozenset[str] = field(default_factory=frozenset)  # paths never used (held-out files)


def _query(prefix: str, suffix: str, lines: int) -> str:
    before = prefix.split("\n")[-lines:]
    after = suffix.split("\n")[: max(lines // 3, 1)]
    return "\n".join(before + after)


def _used_names(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for name in IDENTIFIER.findall(text):
        seen.setdefault(name, None)
    return list(seen)


def build_context(
    index: RepoIndex | None,
    target_path: str,
    prefix: str,
    suffix: str = "",
    *,
    count_tokens: Callable[[str], int],
    options: ContextOptions | None = None,
    client_snippets: Sequence[Snippet] = (),
    count_many: Callable[[list[str]], list[int]] | None = None,
) -> list[Snippet]:
    """Snippets for the cursor between ``prefix`` and ``suffix`` of ``target_path``, within the budget.

    Only files of ``index`` (one repository) other than the target and ``options.exclude`` are used;
    a snippet that would pass the token budget is left out, so the total never exceeds it.
    """
    options = options or ContextOptions()
    unknown = set(options.strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown context strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
    banned = set(options.exclude) | {target_path}
    candidates: list[Snippet] = []
    if "client" in options.strategies:
        candidates += [s for s in client_snippets if s.path not in banned]
    if index is not None:
        text = prefix + suffix
        if "imports" in options.strategies:
            for path in index.imported_files(target_path, text):
                if path not in banned and count_tokens(index.files[path]) <= options.max_file_tokens:
                    candidates.append(Snippet(path, index.files[path], "imports"))
        if "definitions" in options.strategies:
            near = _query(prefix, suffix, options.query_lines)
            defined = [(name, index.definitions(name)) for name in _used_names(near)]
            defined = [(name, found) for name, found in defined if found]
            # names the text defines itself need no definition from elsewhere
            used = set(IDENTIFIER.findall(text)) if defined else set()
            for name, found in defined:
                if name in used and (f"def {name}" in text or f"class {name}" in text):
                    continue
                for path, source in found:
                    if path not in banned:
                        candidates.append(Snippet(path, source, "definitions"))
        if "bm25" in options.strategies:
            query = _query(prefix, suffix, options.query_lines)
            for score, chunk in index.search(query, k=options.bm25_chunks, exclude=banned):
                candidates.append(Snippet(chunk.path, chunk.text, "bm25", score))
    framed = [_framed(snippet) for snippet in candidates]
    # ``count_many`` prices every candidate in one batch (build prices thousands of examples' worth)
    costs = count_many(framed) if count_many is not None else None
    chosen: list[Snippet] = []
    used, seen = 0, set()
    for k, snippet in enumerate(candidates):
        if snippet.text in seen or any(snippet.text in c.text for c in chosen if c.path == snippet.path):
            continue
        cost = costs[k] if costs is not None else count_tokens(framed[k])
        if used + cost > options.budget_tokens:
            continue
        chosen.append(snippet)
        seen.add(snippet.text)
        used += cost
    return chosen


def _framed(snippet: Snippet) -> str:
    # what a snippet costs once rendered: its path line, its text and a separator
    return f"{snippet.path}\n{snippet.text}\n"
