"""An index of one repository's files: chunks for BM25, top-level definitions by name, import targets."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

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


def identifier_tokens(text: str) -> list[str]:
    """Identifiers, also split at camelCase and snake_case parts (BM25 terms)."""
    out = []
    for name in IDENTIFIER.findall(text):
        out.append(name)
        parts = [p for p in re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", name) if p]
        if len(parts) > 1:
            out.extend(p.lower() for p in parts)
    return out


@dataclass(frozen=True)
class Chunk:
    """A window of lines of one file."""

    path: str
    start_line: int
    text: str


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

    def __post_init__(self) -> None:
        self.chunks, self._terms, self._df = [], [], Counter()
        self._definitions = {}
        for path, text in sorted(self.files.items()):
            lines = text.split("\n")
            for start in range(0, max(len(lines) - self.stride, 1), self.stride):
                chunk = "\n".join(lines[start : start + self.chunk_lines])
                if chunk.strip():
                    self.chunks.append(Chunk(path, start + 1, chunk))
                    terms = Counter(identifier_tokens(chunk))
                    self._terms.append(terms)
                    self._df.update(terms.keys())
            for name, snippet in self._top_level_definitions(path, text):
                self._definitions.setdefault(name, []).append((path, snippet))
        lengths = [sum(t.values()) for t in self._terms]
        self._mean_length = sum(lengths) / max(len(lengths), 1)

    def _top_level_definitions(self, path: str, text: str) -> list[tuple[str, str]]:
        from codetune.languages import get_language, language_for_path, parse

        language = language_for_path(path) or (get_language(self.language) if self.language else None)
        if language is None or language.grammar is None or not language.unit_types:
            return []
        tree = parse(language, text)
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

    def search(self, query: str, k: int = 8, exclude: set[str] | None = None) -> list[tuple[float, Chunk]]:
        """The ``k`` chunks that best match ``query`` (Okapi BM25, k1=1.2, b=0.75), best first."""
        terms = set(identifier_tokens(query))
        n = len(self.chunks)
        scored = []
        for chunk, counts in zip(self.chunks, self._terms):
            if exclude and chunk.path in exclude:
                continue
            length = sum(counts.values())
            score = 0.0
            for term in terms & counts.keys():
                idf = math.log(1 + (n - self._df[term] + 0.5) / (self._df[term] + 0.5))
                tf = counts[term]
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / max(self._mean_length, 1)))
            if score > 0:
                scored.append((score, chunk))
        scored.sort(key=lambda pair: (-pair[0], pair[1].path, pair[1].start_line))
        return scored[:k]

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
    rows: list[dict], *, exclude: set[str] | None = None, language: str | None = None
) -> dict[str, RepoIndex]:
    """One index per repository of corpus rows (``repo``, ``path``, ``content`` or ``text``); rows whose
    path is in ``exclude`` (held-out files) are left out of every index."""
    by_repo: dict[str, dict[str, str]] = {}
    for row in rows:
        path = row["path"]
        if exclude and path in exclude:
            continue
        text = row.get("content", row.get("text"))
        if isinstance(text, str):
            by_repo.setdefault(str(row.get("repo") or ""), {})[path] = text
    return {repo: RepoIndex(repo, files, language) for repo, files in by_repo.items()}
