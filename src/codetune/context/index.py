"""An index of one repository's files: chunks for BM25, top-level definitions by name, import targets."""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import InitVar, dataclass, field
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
    """What indexing one file finds: its chunks, their terms, its top-level definitions."""

    chunks: list[Chunk]
    terms: list[Counter]
    definitions: list[tuple[str, str]]


@dataclass
class RepoIndex:
    """Files of one repository (path -> text), indexed for retrieval. Paths are POSIX, relative."""

    name: str
    files: dict[str, str]
    language: str | None = None
    chunk_lines: int = 16
    stride: int = 8
    chunks: list[Chunk] = field(init=False)
    _terms: list[Counter] = field(init=False, repr=False)
    _df: Counter = field(init=False, repr=False)
    _definitions: dict[str, list[tuple[str, str]]] = field(init=False, repr=False)
    # term -> (indexes of the chunks holding it, its BM25 weight in each): a query's scores are the
    # sums of its terms' weights, added up in one numpy call
    _postings: dict[str, tuple[Any, Any]] = field(init=False, repr=False)

    # (path, text) -> what indexing the file found, shared by indexes built over overlapping files
    # (build's per-split indexes) so each file is parsed once; not kept in the index
    analysed: InitVar[dict[tuple[str, str], FileAnalysis] | None] = None

    def __post_init__(self, analysed: dict[tuple[str, str], FileAnalysis] | None) -> None:
        self.chunks, self._terms, self._df = [], [], Counter()
        self._definitions, self._postings = {}, {}
        for path, text in sorted(self.files.items()):
            found = analysed.get((path, text)) if analysed is not None else None
            if found is None:
                found = self._analyse(path, text)
                if analysed is not None:
                    analysed[(path, text)] = found
            for chunk, terms in zip(found.chunks, found.terms, strict=True):
                self.chunks.append(chunk)
                self._terms.append(terms)
                self._df.update(terms.keys())
            for name, snippet in found.definitions:
                self._definitions.setdefault(name, []).append((path, snippet))
        self._index_terms()

    def _analyse(self, path: str, text: str) -> FileAnalysis:
        chunks, terms = [], []
        lines = text.split("\n")
        for start in range(0, max(len(lines) - self.stride, 1), self.stride):
            chunk = "\n".join(lines[start : start + self.chunk_lines])
            if chunk.strip():
                chunks.append(Chunk(path, start + 1, chunk))
                terms.append(Counter(identifier_tokens(chunk)))
        return FileAnalysis(chunks, terms, self._top_level_definitions(path, text))

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

    def _index_terms(self) -> None:
        """Each term's postings with its Okapi BM25 weight (k1=1.2, b=0.75), which a query only sums."""
        import numpy as np

        n = len(self.chunks)
        term_ids: dict[str, int] = {}
        chunk_of, term_of, counts, lengths = [], [], [], []
        for index, terms in enumerate(self._terms):
            lengths.append(sum(terms.values()))
            for term, tf in terms.items():
                chunk_of.append(index)
                term_of.append(term_ids.setdefault(term, len(term_ids)))
                counts.append(tf)
        df = np.asarray([self._df[term] for term in term_ids], dtype=np.float64)
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        length = np.asarray(lengths, dtype=np.float64)
        norm = 1.2 * (0.25 + 0.75 * length / max(length.sum() / max(n, 1), 1))
        chunk = np.asarray(chunk_of, dtype=np.int64)
        tf = np.asarray(counts, dtype=np.float64)
        term = np.asarray(term_of, dtype=np.int64)
        weights = idf[term] * tf * 2.2 / (tf + norm[chunk])
        order = np.argsort(term, kind="stable")
        bounds = np.searchsorted(term[order], np.arange(len(term_ids) + 1))
        self._postings = {
            name: (chunk[order[bounds[k] : bounds[k + 1]]], weights[order[bounds[k] : bounds[k + 1]]])
            for name, k in term_ids.items()
        }
        paths = sorted(self.files)
        self._path_ids = {path: k for k, path in enumerate(paths)}
        self._chunk_paths = np.asarray([self._path_ids[chunk.path] for chunk in self.chunks], dtype=np.int64)

    def search(self, query: str, k: int = 8, exclude: set[str] | None = None) -> list[tuple[float, Chunk]]:
        """The ``k`` chunks that best match ``query`` (Okapi BM25, k1=1.2, b=0.75), best first."""
        import numpy as np

        found = [self._postings[term] for term in set(identifier_tokens(query)) if term in self._postings]
        if not found or k <= 0:
            return []
        scores = np.bincount(
            np.concatenate([where for where, _ in found]),
            weights=np.concatenate([weights for _, weights in found]),
            minlength=len(self.chunks),
        )
        hits = np.flatnonzero(scores > 0)
        banned = [self._path_ids[path] for path in exclude or () if path in self._path_ids]
        if banned:
            excluded = np.zeros(len(self._path_ids), dtype=bool)
            excluded[banned] = True
            hits = hits[~excluded[self._chunk_paths[hits]]]
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
    analysed: dict[tuple[str, str], FileAnalysis] | None = None,
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
