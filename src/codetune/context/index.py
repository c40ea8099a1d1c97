"""An index of one repository's files: chunks for BM25, top-level definitions by name, import targets."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from itertools import chain
from pathlib import PurePosixPath
from typing import Any

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# import statements per language: each match gives a dotted or relative module name
_IMPORTS = {
    "python": re.compile(r"^\s*(?:from\s+([.\w]+)\s+import|import\s+([.\w]+))", re.M),
    "elm": re.compile(r"^import\s+([\w.]+)", re.M),
    "kotlin": re.compile(r"^import\s+([\w.]+)", re.M),
    "java": re.compile(r"^import\s+(?:static\s+)?([\w.]+)", re.M),
    "javascript": re.compile(r"""(?:from\s+|require\()\s*['"]([^'"]+)['"]""", re.M),
    "typescript": re.compile(r"""(?:from\s+|require\()\s*['"]([^'"]+)['"]""", re.M),
}


# A term in at least this share of a repository's chunks is scored as a dense row (RepoIndex.search);
# only in indexes of this many chunks or more, where its postings would be long. A row takes at most
# twice its postings' memory (8 bytes a chunk against 16 a posting); in Kong (40,000 chunks) 12 rows,
# 3 MB, and as fast as an eighth (41 rows) or a half (3 rows).
DENSE_SHARE = 1 / 4
DENSE_MIN_CHUNKS = 2_048
# Scores are cut into this many groups to bound the k-th best cheaply (_kth_floor).
SCORE_BLOCK = 64
_SMALLEST = 5e-324  # the least positive float: chunks scoring 0 are never hits

_NAME_PARTS = re.compile(r"_|(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=1 << 16)
def _name_terms(name: str) -> tuple[str, ...]:
    parts = [p for p in _NAME_PARTS.split(name) if p]
    return (name, *(p.lower() for p in parts)) if len(parts) > 1 else (name,)


def identifier_tokens(text: str) -> list[str]:
    """Identifiers, also split at camelCase and snake_case parts (BM25 terms)."""
    return [term for name in IDENTIFIER.findall(text) for term in _name_terms(name)]


@dataclass(frozen=True)
class Chunk:
    """A window of lines of one file."""

    path: str
    start_line: int
    text: str


@dataclass(frozen=True)
class FileAnalysis:
    """What indexing one file finds: its chunks, their terms, its top-level definitions.

    The terms of every chunk, chunk after chunk, as ids of an :class:`Analyses` vocabulary, each
    with its count in its chunk; ``sizes`` says how many distinct terms each chunk has."""

    chunks: list[Chunk]
    term_ids: Any
    term_counts: Any
    sizes: Any
    definitions: list[tuple[str, str]]


@dataclass
class Analyses:
    """What indexing found per file, and the vocabulary its term ids come from: shared by indexes
    built over overlapping files (build's per-split indexes), so each file is parsed once."""

    files: dict[tuple[str, str], FileAnalysis] = field(default_factory=dict)
    vocabulary: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def term_ids(self, terms: Iterable[str]) -> list[int]:
        """Ids of ``terms``, a new id for each term not seen before."""
        vocabulary, names, out = self.vocabulary, self.names, []
        for term in terms:
            found = vocabulary.get(term)
            if found is None:
                found = vocabulary[term] = len(names)
                names.append(term)
            out.append(found)
        return out


@dataclass
class RepoIndex:
    """Files of one repository (path -> text), indexed for retrieval. Paths are POSIX, relative."""

    name: str
    files: dict[str, str]
    language: str | None = None
    chunk_lines: int = 16
    stride: int = 8
    chunks: list[Chunk] = field(init=False)
    _definitions: dict[str, list[tuple[str, str]]] = field(init=False, repr=False)
    # term -> (indexes of the chunks holding it, its BM25 weight in each): a query's scores are the
    # sums of its terms' weights, added up in one numpy call
    _postings: dict[str, tuple[Any, Any]] = field(init=False, repr=False)
    _dense: dict[str, Any] = field(init=False, repr=False)  # term -> its weight in every chunk
    _spans: dict[str, tuple[int, int]] = field(init=False, repr=False)  # path -> its chunks' range

    # the per-file work of other indexes over overlapping files, to reuse; not kept in the index
    analysed: InitVar[Analyses | None] = None

    def __post_init__(self, analysed: Analyses | None) -> None:
        analyses = analysed if analysed is not None else Analyses()
        self.chunks, self._definitions = [], {}
        found_files = []
        for path, text in sorted(self.files.items()):
            found = analyses.files.get((path, text))
            if found is None:
                found = analyses.files[(path, text)] = self._analyse(path, text, analyses)
            found_files.append(found)
            self.chunks += found.chunks
            for name, snippet in found.definitions:
                self._definitions.setdefault(name, []).append((path, snippet))
        self._index_terms(found_files, analyses.names)

    def _analyse(self, path: str, text: str, analyses: Analyses) -> FileAnalysis:
        import numpy as np

        chunks, terms, counts, sizes = [], [], [], []
        lines = text.split("\n")
        # chunks overlap: each run of ``stride`` lines is split into terms once (no identifier
        # crosses a line), and a chunk's terms are those of the runs it covers
        runs = self.chunk_lines // self.stride if self.chunk_lines % self.stride == 0 else 0
        run_terms = [
            identifier_tokens("\n".join(lines[start : start + self.stride]))
            for start in range(0, len(lines), self.stride)
        ]
        for start in range(0, max(len(lines) - self.stride, 1), self.stride):
            chunk = "\n".join(lines[start : start + self.chunk_lines])
            if chunk.strip():
                chunks.append(Chunk(path, start + 1, chunk))
                if runs:
                    first = start // self.stride
                    counted = Counter(chain.from_iterable(run_terms[first : first + runs]))
                else:
                    counted = Counter(identifier_tokens(chunk))
                terms += counted.keys()
                counts += counted.values()
                sizes.append(len(counted))
        return FileAnalysis(
            chunks,
            np.asarray(analyses.term_ids(terms), dtype=np.int64),
            np.asarray(counts, dtype=np.float64),
            np.asarray(sizes, dtype=np.int64),
            self._top_level_definitions(path, text),
        )

    def snippets(self) -> list[tuple[str, str]]:
        """(path, text) of every chunk and top-level definition: all a query can return."""
        found = [(chunk.path, chunk.text) for chunk in self.chunks]
        return found + [pair for pairs in self._definitions.values() for pair in pairs]

    def _top_level_definitions(self, path: str, text: str) -> list[tuple[str, str]]:
        from codetune.languages import get_language, language_for_path, parse

        language = language_for_path(path) or (get_language(self.language) if self.language else None)
        if language is None or language.grammar is None or not language.unit_types:
            return []
        tree = parse(language, text, path)
        found = []
        for node in tree.root_node.children:
            target = node
            if node.type == "decorated_definition":
                target = node.child_by_field_name("definition") or node
            if target.type not in language.unit_types and node.type not in language.unit_types:
                continue
            name_node = target.child_by_field_name("name")
            if name_node is None:
                continue
            found.append((name_node.text.decode("utf-8", "replace"), node.text.decode("utf-8", "replace")))
        return found

    def _index_terms(self, found_files: list[FileAnalysis], names: list[str]) -> None:
        """Each term's postings with its Okapi BM25 weight (k1=1.2, b=0.75), which a query only sums.

        A term in at least a ``DENSE_SHARE`` of the chunks keeps its weights as one row over all chunks
        instead: a query adds such rows whole, which costs less than scattering their long postings
        (a few common names make most of a query's postings)."""
        import numpy as np

        n = len(self.chunks)
        vocabulary_ids = np.concatenate([f.term_ids for f in found_files] or [np.zeros(0, np.int64)])
        tf = np.concatenate([f.term_counts for f in found_files] or [np.zeros(0)])
        sizes = np.concatenate([f.sizes for f in found_files] or [np.zeros(0, np.int64)])
        chunk = np.repeat(np.arange(n, dtype=np.int64), sizes)
        # the index's own term ids: 0.. in the order of the vocabulary's ids (a counting pass: the
        # vocabulary is small, a sort of every posting is not)
        present = np.zeros(len(names), dtype=bool)
        present[vocabulary_ids] = True
        known = np.flatnonzero(present)
        term = (np.cumsum(present) - 1)[vocabulary_ids]
        df = np.bincount(term, minlength=len(known)).astype(np.float64)
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        length = np.bincount(chunk, weights=tf, minlength=n)
        norm = 1.2 * (0.25 + 0.75 * length / max(length.sum() / max(n, 1), 1))
        weights = idf[term] * tf * 2.2 / (tf + norm[chunk])
        order = np.argsort(term, kind="stable")
        bounds = np.searchsorted(term[order], np.arange(len(known) + 1))
        dense_from = n * DENSE_SHARE if n >= DENSE_MIN_CHUNKS else float("inf")
        self._postings, self._dense = {}, {}
        for k, vocabulary_id in enumerate(known.tolist()):
            where = order[bounds[k] : bounds[k + 1]]
            if len(where) >= dense_from:
                row = np.zeros(n, dtype=np.float64)
                row[chunk[where]] = weights[where]
                self._dense[names[vocabulary_id]] = row
            else:
                self._postings[names[vocabulary_id]] = (chunk[where], weights[where])
        # chunks are laid out file by file (sorted paths): a file's chunks are one range
        self._spans = {}
        for position, found in enumerate(self.chunks):
            start, _ = self._spans.get(found.path, (position, position))
            self._spans[found.path] = (start, position + 1)

    def search(self, query: str, k: int = 8, exclude: set[str] | None = None) -> list[tuple[float, Chunk]]:
        """The ``k`` chunks that best match ``query`` (Okapi BM25, k1=1.2, b=0.75), best first."""
        import numpy as np

        terms = set(identifier_tokens(query))
        sparse = [self._postings[term] for term in terms if term in self._postings]
        dense = [self._dense[term] for term in terms if term in self._dense]
        if not (sparse or dense) or k <= 0:
            return []
        n = len(self.chunks)
        if sparse:
            scores = np.bincount(
                np.concatenate([where for where, _ in sparse]),
                weights=np.concatenate([weights for _, weights in sparse]),
                minlength=n,
            )
        else:
            scores = np.zeros(n, dtype=np.float64)
        for row in dense:
            scores += row
        for path in exclude or ():
            if path in self._spans:
                start, end = self._spans[path]
                scores[start:end] = 0
        hits = np.flatnonzero(scores >= _kth_floor(scores, k))
        if len(hits) > k:  # every chunk scoring at least the k-th best, ties included
            kth = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
            hits = hits[scores[hits] >= kth]
        ranked = sorted(
            hits.tolist(), key=lambda i: (-scores[i], self.chunks[i].path, self.chunks[i].start_line)
        )
        return [(float(scores[i]), self.chunks[i]) for i in ranked[:k]]

    def definitions(self, name: str) -> list[tuple[str, str]]:
        """(path, source) of each top-level definition of ``name`` in the repository."""
        return list(self._definitions.get(name, []))

    def imported_files(self, path: str, text: str, language: str | None = None) -> list[str]:
        """Files of this repository that ``text`` (the file at ``path``) imports."""
        language = language or self.language or _language_of(path)
        pattern = _IMPORTS.get(language or "")
        if pattern is None:
            return []
        here = PurePosixPath(path).parent
        found: list[str] = []
        for match in pattern.finditer(text):
            module = next(group for group in match.groups() if group)
            for candidate in _module_paths(module, here, language or ""):
                if candidate in self.files and candidate != path and candidate not in found:
                    found.append(candidate)
                    break
        return found


def _kth_floor(scores: Any, k: int) -> float:
    """A floor under the ``k``-th best positive score: the ``k``-th best of the maxima of
    ``SCORE_BLOCK`` interleaved groups of chunks (``k`` groups each hold a score at least that high),
    so only the chunks above it need ranking."""
    import numpy as np

    whole = len(scores) - len(scores) % SCORE_BLOCK
    if whole < k * SCORE_BLOCK:
        return _SMALLEST
    maxima = scores[:whole].reshape(SCORE_BLOCK, -1).max(axis=0)
    return max(float(np.partition(maxima, len(maxima) - k)[len(maxima) - k]), _SMALLEST)


def _language_of(path: str) -> str | None:
    from codetune.languages import language_for_path

    language = language_for_path(path)
    return language.name if language else None


def _module_paths(module: str, here: PurePosixPath, language: str) -> list[str]:
    if language == "python":
        dots = len(module) - len(module.lstrip("."))
        base = here
        for _ in range(max(dots - 1, 0)):
            base = base.parent
        parts = [p for p in module.lstrip(".").split(".") if p]
        roots = [base] if dots else [PurePosixPath(""), here]
        out = []
        for root in roots:
            stem = root.joinpath(*parts) if parts else root
            out += [f"{stem}.py", f"{stem}/__init__.py"]
        return out
    if language in ("javascript", "typescript"):
        if not module.startswith("."):
            return []
        stem = str(PurePosixPath(here, module))
        stem = str(PurePosixPath(*[p for p in PurePosixPath(stem).parts if p != "."]))
        return [stem, *(f"{stem}{ext}" for ext in (".js", ".ts", ".mjs", ".jsx", ".tsx", "/index.js"))]
    extension = {"elm": ".elm", "kotlin": ".kt", "java": ".java"}.get(language, "")
    parts = module.split(".")
    # Elm maps A.B to src/A/B.elm; JVM languages map a.b.C to any source root ending in a/b/C
    return [
        f"{root}{'/'.join(parts)}{extension}" for root in ("", "src/", "src/main/kotlin/", "src/main/java/")
    ]


def index_repositories(
    rows: list[dict],
    *,
    exclude: set[str] | None = None,
    language: str | None = None,
    analysed: Analyses | None = None,
) -> dict[str, RepoIndex]:
    """One index per repository of corpus rows (``repo``, ``path``, ``content`` or ``text``); rows whose
    path is in ``exclude`` (held-out files) are left out of every index. ``analysed`` shares the
    per-file work between calls over overlapping rows."""
    by_repo: dict[str, dict[str, str]] = {}
    for row in rows:
        path = row["path"]
        if exclude and path in exclude:
            continue
        text = row.get("content", row.get("text"))
        if isinstance(text, str):
            by_repo.setdefault(str(row.get("repo") or ""), {})[path] = text
    return {repo: RepoIndex(repo, files, language, analysed=analysed) for repo, files in by_repo.items()}
