"""Filter steps: each answers True (keep) or (False, reason); plus the licence-header strip transform.

Thresholds follow bigcode's StarCoder data pipeline (max line 1000, mean line 100, alphanumeric
fraction 0.25, encoded runs of 64+ characters) and can be overridden per language.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codetune.languages import Language, parse_lenient, unparsed_fraction

Verdict = bool | tuple[bool, str]


@dataclass
class Doc:
    """One candidate file on its way through the filters."""

    path: str
    repo: str
    text: str
    language: Language
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Thresholds:
    """The numbers filters read: the config's values, with per-language overrides applied."""

    min_lines: int
    min_tokens: int
    max_error_fraction: float
    max_line_length: int
    max_mean_line_length: float
    min_alnum_fraction: float
    generated_markers: tuple[str, ...]
    generated_lines: int
    encoded_min_run: int
    encoded_max_match: int
    encoded_max_fraction: float
    max_literal_chars: int
    max_literal_fraction: float
    max_numeric_fraction: float

    @classmethod
    def from_config(cls, cfg: Any, language: str) -> Thresholds:
        """Read thresholds from a CollectConfig, applying ``language_thresholds[language]``."""
        values = {name: getattr(cfg, name) for name in cls.__dataclass_fields__}
        values["generated_markers"] = tuple(m.lower() for m in values["generated_markers"])
        for key, value in cfg.language_thresholds.get(language, {}).items():
            if key not in values:
                from codetune.errors import ConfigError

                raise ConfigError(f"language_thresholds.{language}: unknown threshold {key!r}")
            values[key] = type(values[key])(value)
        return cls(**values)


FilterFn = Callable[[Doc, Thresholds], Verdict]
FILTERS: dict[str, FilterFn] = {}


def register_filter(name: str) -> Callable[[FilterFn], FilterFn]:
    """Register a filter step under the reason name it reports."""

    def wrap(fn: FilterFn) -> FilterFn:
        FILTERS[name] = fn
        return fn

    return wrap


def run_filters(doc: Doc, names: list[str], th: Thresholds) -> str | None:
    """Apply the named filters in order; return the first reason to drop, or None to keep."""
    for name in names:
        verdict = FILTERS[name](doc, th)
        if verdict is True:
            continue
        if verdict is False:
            return name
        if not verdict[0]:
            return verdict[1]
    return None


def syntax_tree(doc: Doc) -> Any:
    """The document's tree-sitter tree, parsed once and shared by the filters (None: no grammar)."""
    if "tree" not in doc.meta:
        doc.meta["tree"] = _tree_of(doc.text, doc)
    return doc.meta["tree"]


def _tree_of(text: str, doc: Doc) -> Any:
    # A stray NUL (seen in real doc comments) stops tree-sitter; a space keeps every offset.
    if doc.language.grammar_for(doc.path) is None:
        return None
    return parse_lenient(doc.language, text.replace("\0", " "), doc.path)


def _is_comment_node(node: Any) -> bool:
    if "comment" in node.type:
        return True
    # A Python module docstring (or any bare string statement) is prose too.
    if node.type == "string":
        return True
    return node.type == "expression_statement" and all(c.type == "string" for c in node.named_children)


# Bytes that never occur in text (tab, newlines, form feed and escape excepted).
_CONTROL_BYTES = bytes(c for c in range(32) if c not in (9, 10, 11, 12, 13, 27)) + b"\x7f"
BINARY_CONTROL_FRACTION = 0.03


def is_binary(data: bytes) -> bool:
    """Whether a file's first bytes are binary: more than 3% control bytes. One NUL in a doc
    comment does not make a source file binary; random or compressed bytes are ~10% control."""
    if not data:
        return False
    return len(data) - len(data.translate(None, _CONTROL_BYTES)) > BINARY_CONTROL_FRACTION * len(data)


@register_filter("empty")
def _empty(doc: Doc, th: Thresholds) -> Verdict:
    """Blank files are ``empty``; files of nothing but comments (often once the licence header is
    gone: ``meta["original"]`` holds the text before the strip) are ``only_comments``."""
    if not doc.text.strip():
        return (False, "only_comments") if doc.meta.get("original", "").strip() else (False, "empty")
    tree = syntax_tree(doc)
    if tree is not None and not tree.root_node.has_error:
        children = tree.root_node.named_children
        if children and all(_is_comment_node(child) for child in children):
            return False, "only_comments"
    elif doc.language.line_comment and all(
        line.lstrip().startswith(doc.language.line_comment) for line in doc.text.splitlines() if line.strip()
    ):
        return False, "only_comments"
    return True


# Path parts of copied third-party code and build output (matched case-insensitively).
VENDORED_DIRS = frozenset(
    {
        "external",
        "externals",
        "third_party",
        "third-party",
        "thirdparty",
        "3rdparty",
        "vendor",
        "vendors",
        "vendored",
        "bower_components",
        "node_modules",
        "jspm_packages",
        "web_modules",
        "bundles",
    }
)
_MINIFIED_NAME = re.compile(r"[.-]min\.[a-z0-9]+$", re.I)
_BUNDLE_NAME = re.compile(r"[.-]bundle\.[a-z0-9]+$", re.I)
# Release banners of well-known libraries: the name with a version, in the file's first comment.
_LIBRARY_BANNER = re.compile(
    r"(?i)\b(?:jquery(?: javascript library| migrate| ui)?|requirejs|require\.js|underscore(?:\.js)?|"
    r"lodash|backbone(?:\.js)?|bootstrap|modernizr|moment(?:\.js)?|d3(?:\.js)?|react(?:-dom)?|vue(?:\.js)?|"
    r"angular(?:js)?|knockout(?:\.js)?|handlebars|mustache\.js|zepto(?:\.js)?|prototype(?:\.js)?|mootools|"
    r"dojo|ember(?:\.js)?|highlight\.js|prism|chart\.js|three\.js|socket\.io|sizzle(?: css selector engine)?|"
    r"popper(?:\.js)?|leaflet|hammer\.js|select2|datatables|core-js|regenerator-runtime|polyfill)"
    r"\s*[-:]?\s*(?:<[^>]*>\s*)?v?\d+\.\d+(?:\.\d+)?"
)
# Build output: a source map reference or a bundler's runtime.
_BUNDLE_MARKERS = (
    "//# sourceMappingURL=",
    "/*# sourceMappingURL=",
    "webpackBootstrap",
    "__webpack_require__",
)


def _first_comment(text: str, language: Language) -> str:
    """The file's leading comment block (consecutive line comments, or one block comment)."""
    stripped = text.lstrip()
    block = language.block_comment
    if block and stripped.startswith(block[0]):
        end = stripped.find(block[1], len(block[0]))
        return stripped[: end if end >= 0 else 2000]
    if stripped.startswith("/*"):  # JS-family banners even where the registry lacks block syntax
        end = stripped.find("*/")
        return stripped[: end if end >= 0 else 2000]
    marker = language.line_comment
    if marker and stripped.startswith(marker):
        lines = []
        for line in stripped.splitlines():
            if not line.lstrip().startswith(marker):
                break
            lines.append(line)
        return "\n".join(lines)
    return ""


# Header lines of well-known projects whose files get copied verbatim into others (merlin carries
# six copies of the OCaml compiler's typer under upstream/ocaml_5xx/): project -> banner. The
# pipeline drops such copies as vendored unless the repository is named after the project or most of
# its files carry the banner (the project itself, or another repository of its organisation).
PROJECT_BANNERS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "ocaml": r"\(\*\s{3,}OCaml\s{3,}\*\)",
        "go": r"Copyright \d{4} The Go Authors",
        "llvm": r"Part of the LLVM Project",
        "chromium": r"Copyright \d{4} The Chromium Authors",
        "rust": r"The Rust Project Developers",
        "kotlin": r"JetBrains s\.r\.o\. and Kotlin Programming Language contributors",
        "swift": r"This source file is part of the Swift\.org open source project",
        "ghc": r"\(c\) The University of Glasgow",
        "lua": r"Lua\.org, PUC-Rio",
        "sqlite": r"The author disclaims copyright to this source code",
        "node": r"Joyent, Inc\. and other Node contributors",
        "jdk": r"Oracle and/or its affiliates\. All rights reserved\.\s*\S*\s*DO NOT ALTER OR REMOVE",
        "julia": r"This file is a part of Julia\. License is MIT",
        "scala": r"Scala \(https://www\.scala-lang\.org\)",
        "nim": r"Nim's Runtime Library",
        "openzeppelin": r"OpenZeppelin Contracts\b",
    }.items()
}


def copied_project(repo: str, original: str, language: Language) -> str | None:
    """The well-known project whose banner a file's header carries (see PROJECT_BANNERS), unless the
    repository is named after it."""
    lines = original[:8000].splitlines(keepends=True)
    header = "".join(lines[: header_end(lines, language)])
    own = repo.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    for name, banner in PROJECT_BANNERS.items():
        if name not in own and banner.search(header):
            return name
    return None


def vendored_reason(path: str, original: str, language: Language) -> str | None:
    """``vendored``, ``minified`` or ``bundle`` when a file is a copy of someone else's code or a build
    output (by its path, its name, its banner or its build markers); None for the project's own code."""
    parts = path.replace("\\", "/").lower().split("/")
    if any(part in VENDORED_DIRS or part.startswith("vendor") for part in parts[:-1]):
        return "vendored"
    name = parts[-1]
    if _MINIFIED_NAME.search(name):
        return "minified"
    if _BUNDLE_NAME.search(name):
        return "bundle"
    # Build output first: a project's own bundle carries its own banner.
    tail = original[-300:]
    if any(marker in tail for marker in _BUNDLE_MARKERS[:2]) or any(
        m in original[:5000] for m in _BUNDLE_MARKERS[2:]
    ):
        return "bundle"
    if _LIBRARY_BANNER.search(_first_comment(original, language)[:2000]):
        return "vendored"
    return None


@register_filter("vendored")
def _vendored(doc: Doc, th: Thresholds) -> Verdict:
    reason = vendored_reason(doc.path, doc.meta.get("original", doc.text), doc.language)
    return reason is None or (False, reason)


# Test fixtures holding a code generator's expected output: an output folder below a test folder
# (SQLDelight's src/test/*-fixtures/NAME/output/...). A package named `expected` in main code is not.
_TEST_PARTS = re.compile(
    r"tests?|spec|specs|__tests__|testdata|test[-_]data|fixtures?|.*[-_]fixtures|__fixtures__|testfixtures"
)
# test_x.py, x_test.go, x_spec.lua, x.test.ts, XTest.kt, XTests.swift, XSpec.scala (not latest.kt).
_TEST_NAME = re.compile(r"^test_|(?:_test|_spec|\.test|\.spec|Tests?|Spec)\.\w+$")


def is_test_path(path: str) -> bool:
    """Whether a file is a test or test fixture (by a test folder or a test file name)."""
    parts = path.replace("\\", "/").split("/")
    return any(_TEST_PARTS.fullmatch(part.lower()) for part in parts[:-1]) or bool(
        _TEST_NAME.search(parts[-1])
    )


_OUTPUT_PARTS = frozenset(
    {"output", "outputs", "expected", "expected-output", "expected_output", "golden", "goldens", "snapshots"}
)


@register_filter("expected_output")
def _expected_output(doc: Doc, th: Thresholds) -> Verdict:
    parts = doc.path.replace("\\", "/").lower().split("/")[:-1]
    for index, part in enumerate(parts):
        if _TEST_PARTS.fullmatch(part) and any(later in _OUTPUT_PARTS for later in parts[index + 1 :]):
            return False, "expected_output"
    return "__snapshots__" not in parts or (False, "expected_output")


@register_filter("too_few_lines")
def _too_few_lines(doc: Doc, th: Thresholds) -> Verdict:
    lines = sum(1 for line in doc.text.splitlines() if line.strip())
    return lines >= th.min_lines or (False, "too_few_lines")


_TOKEN = re.compile(r"\w+|[^\w\s]")


@register_filter("too_few_tokens")
def _too_few_tokens(doc: Doc, th: Thresholds) -> Verdict:
    if th.min_tokens <= 0:
        return True
    for count, _ in enumerate(_TOKEN.finditer(doc.text), 1):
        if count >= th.min_tokens:
            return True
    return False, "too_few_tokens"


_LITERAL_TYPES = ("string", "regex", "char_literal", "heredoc")


def code_line_lengths(doc: Doc) -> list[int]:
    """Lengths of the lines holding code; lines that are only comment or only string literal are
    counted apart in ``doc.meta`` (``comment_lines``, ``literal_lines``). A long commented-out line
    or embedded text is not what bigcode's line-length thresholds are about."""
    if "code_lines" in doc.meta:
        return doc.meta["code_lines"]
    lines = doc.text.split("\n")
    tree = syntax_tree(doc)
    if tree is None:
        marker = doc.language.line_comment
        keep = [len(line) for line in lines if not (marker and line.lstrip().startswith(marker))]
        doc.meta["comment_lines"] = len(lines) - len(keep)
        doc.meta["code_lines"] = keep
        return keep
    # Mark each line: does it hold a token outside comments and literals, a comment, a literal?
    marks = {"code": [False] * len(lines), "comment": [False] * len(lines), "literal": [False] * len(lines)}

    def mark(kind: str, node: Any) -> None:
        for row in range(node.start_point[0], min(node.end_point[0] + 1, len(lines))):
            marks[kind][row] = True

    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if "comment" in node.type:
            mark("comment", node)
        elif any(t in node.type for t in _LITERAL_TYPES):
            mark("literal", node)
        elif node.child_count:
            stack.extend(node.children)
        elif node.end_byte > node.start_byte:
            mark("code", node)
    code = marks["code"]
    keep = [len(line) for line, has_code in zip(lines, code, strict=True) if has_code]
    for kind in ("comment", "literal"):
        doc.meta[f"{kind}_lines"] = sum(1 for row, hit in enumerate(marks[kind]) if hit and not code[row])
    doc.meta["code_lines"] = keep
    return keep


@register_filter("max_line_length")
def _max_line_length(doc: Doc, th: Thresholds) -> Verdict:
    if max((len(line) for line in doc.text.splitlines()), default=0) <= th.max_line_length:
        return True  # the common case needs no parse
    return max(code_line_lengths(doc), default=0) <= th.max_line_length or (False, "max_line_length")


@register_filter("mean_line_length")
def _mean_line_length(doc: Doc, th: Thresholds) -> Verdict:
    lines = doc.text.splitlines() or [""]
    if sum(map(len, lines)) / len(lines) <= th.max_mean_line_length:
        return True
    code = code_line_lengths(doc) or [0]
    return sum(code) / len(code) <= th.max_mean_line_length or (False, "mean_line_length")


@register_filter("alnum_fraction")
def _alnum_fraction(doc: Doc, th: Thresholds) -> Verdict:
    text = doc.text
    if text.isascii():  # the common case: delete non-alphanumeric bytes in C
        alnum = len(text.encode("ascii").translate(None, _NON_ALNUM_BYTES))
    else:
        alnum = len(_NON_ALNUM.sub("", text))
    return alnum / max(len(text), 1) >= th.min_alnum_fraction or (False, "alnum_fraction")


_NON_ALNUM = re.compile(r"[\W_]+")
_NON_ALNUM_BYTES = bytes(c for c in range(128) if not chr(c).isalnum())


@functools.lru_cache(maxsize=8)
def _marker_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(marker) for marker in markers) or "(?!)", re.I)


def _is_docstring(node: Any) -> bool:
    """A string literal standing as a statement of its own (a Python docstring), which is prose."""
    parent = node.parent
    if parent is None or parent.parent is None or parent.type in ("block", "module"):
        return True
    return parent.type == "expression_statement" and parent.named_child_count == 1


def _in_string(tree: Any, offset: int) -> bool:
    """Whether byte ``offset`` lies in a string literal that is not a docstring."""
    node = tree.root_node.descendant_for_byte_range(offset, offset + 1)
    while node is not None:
        if "comment" in node.type:
            return False
        if "string" in node.type.lower():
            while node.parent is not None and "string" in node.parent.type.lower():
                node = node.parent  # the whole literal, not its content node
            return not _is_docstring(node)
        node = node.parent
    return False


# A marker leads its line: at most a few words after the comment's punctuation ("// Code generated
# by", " * This file was procedurally generated", "{-| _NOTE_ this is auto-generated!"), one before
# a bare "generated by" ("Generated by Wire"). "Build artifacts generated by the makefile" is prose.
_MARKER_LEAD = re.compile(r"[ \t]*[^\w\s]*[ \t]*(?:[\w'.,:!-]+[ \t]+){0,4}")
_BARE_MARKER_LEAD = re.compile(r"[ \t]*[^\w\s]*[ \t]*(?:[\w'.,:!-]+[ \t]+)?")


@register_filter("generated")
def _generated(doc: Doc, th: Thresholds) -> Verdict:
    """Generation markers leading a comment line in the file's header comments (however long: Wire
    and OpenZeppelin write theirs inside the licence block, so the original text is read) or in the
    ``generated_lines`` lines after them. A marker inside prose ("files generated by dune can ...")
    or inside a string literal (a template writing "DO NOT EDIT" into the file it makes) is not one."""
    original = doc.meta.get("original", doc.text)
    lines = original.splitlines(keepends=True)
    end = header_end(lines, doc.language) + th.generated_lines
    head = "".join(lines[:end])
    hits = []
    for match in _marker_pattern(th.generated_markers).finditer(head):
        lead = _BARE_MARKER_LEAD if match.group(0).lower().startswith("generated") else _MARKER_LEAD
        if lead.fullmatch(head, head.rfind("\n", 0, match.start()) + 1, match.start()):
            hits.append(match.start())
    if not hits:
        return True
    tree = _tree_of(original, doc)
    if tree is None:
        return False, "generated"
    if all(_in_string(tree, len(head[:start].encode("utf-8"))) for start in hits):
        return True
    return False, "generated"


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_B64_TABLE = bytes(c if c in _B64_CHARS else 32 for c in range(256))  # everything else becomes a space
_HEX_RUN = re.compile(r"(?:(?:0x|\\x)[0-9A-Fa-f]{2}[, ]*){2,}")
_UNICODE_RUN = re.compile(r"(?:\\u[0-9A-Fa-f]{4})+")


def encoded_runs(text: str, min_run: int) -> list[int]:
    """Lengths of base64-like runs, ``0x``/``\\x`` hex byte lists and ``\\u`` escape chains of at least
    ``min_run`` characters (bytes.translate + split: far faster than a regex over every position)."""
    sizes = [
        len(run)
        for run in text.encode("utf-8", "replace").translate(_B64_TABLE).split()
        if len(run) >= min_run
    ]
    for present, pattern in (("0x" in text or "\\x" in text, _HEX_RUN), ("\\u" in text, _UNICODE_RUN)):
        if present:
            sizes.extend(n for n in (m.end() - m.start() for m in pattern.finditer(text)) if n >= min_run)
    return sizes


@register_filter("encoded_data")
def _encoded_data(doc: Doc, th: Thresholds) -> Verdict:
    sizes = encoded_runs(doc.text, th.encoded_min_run)
    if not sizes:
        return True
    if max(sizes) > th.encoded_max_match:
        return False, "encoded_data"
    return sum(sizes) <= th.encoded_max_fraction * max(len(doc.text), 1) or (False, "encoded_data")


# String literals for files without a grammar: triple-quoted (Python, Kotlin, Scala, Swift, Julia),
# "..." and '...' with escapes, and JS template literals.
_LITERAL = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_LITERAL_BACKTICK = re.compile(_LITERAL.pattern + r"|`[^`]*`")
_BACKTICK_LANGUAGES = {"javascript", "typescript", "go"}  # template literals / raw strings
_DOCSTRING_PREFIX = re.compile(r"\s*[rRuUbBfF]{0,2}")


def _is_literal(node: Any) -> bool:
    kind = node.type.lower()
    return node.is_named and ("string" in kind or "heredoc" in kind or kind in ("regex", "char_literal"))


def _literal_spans(doc: Doc) -> list[tuple[int, int]]:
    """Byte spans of the file's string literals (outermost ones; docstrings are prose, left out)."""
    tree = syntax_tree(doc)
    if tree is None:
        text = doc.text
        pattern = _LITERAL_BACKTICK if doc.language.name in _BACKTICK_LANGUAGES else _LITERAL
        spans = []
        for match in pattern.finditer(text):
            start = match.start()
            line_start = text.rfind("\n", 0, start) + 1
            if text.startswith(('"""', "'''"), start) and _DOCSTRING_PREFIX.fullmatch(
                text, line_start, start
            ):
                continue  # a triple-quoted string standing alone on its line is a docstring
            spans.append((len(text[:start].encode()), len(text[: match.end()].encode())))
        return spans
    spans, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if _is_literal(node) and not node.is_error:
            if not _is_docstring(node):
                spans.append((node.start_byte, node.end_byte))
        elif "comment" not in node.type:
            stack.extend(node.children)
    return spans


@register_filter("long_literal")
def _long_literal(doc: Doc, th: Thresholds) -> Verdict:
    """Embedded data (icons, SVG paths, fixtures): a string literal over ``max_literal_chars`` and
    literals covering more than ``max_literal_fraction`` of the file. One long literal in a
    hand-written component or test is not enough."""
    if len(doc.text) <= th.max_literal_chars:
        return True
    spans = _literal_spans(doc)
    if not any(end - start > th.max_literal_chars for start, end in spans):
        return True
    covered = sum(end - start for start, end in spans)
    share = covered / max(len(doc.text.encode("utf-8")), 1)
    return share <= th.max_literal_fraction or (False, "long_literal")


_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"(?:0[xXbBoO][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)[uUlLfFiI]*\d*")
NUMERIC_MIN_WORDS = 500


@register_filter("numeric_data")
def _numeric_data(doc: Doc, th: Thresholds) -> Verdict:
    """Tables of numbers (lookup tables, weights, test vectors dumped as code): more than
    ``max_numeric_fraction`` of the file's words are numbers, in a file of 500 words or more."""
    words = _WORD.findall(doc.text)
    if len(words) < NUMERIC_MIN_WORDS:
        return True
    numbers = sum(1 for word in words if _NUMBER.fullmatch(word))
    return numbers <= th.max_numeric_fraction * len(words) or (False, "numeric_data")


@register_filter("not_language")
def _not_language(doc: Doc, th: Thresholds) -> Verdict:
    if doc.language.grammar_for(doc.path) is None:
        return True
    script = (
        doc.path.lower().endswith(doc.language.script_extensions) if doc.language.script_extensions else False
    )
    text = doc.text.replace("\0", " ")
    fraction = unparsed_fraction(doc.language, text, script, syntax_tree(doc), doc.path)
    doc.meta["error_fraction"] = round(fraction, 4)
    return fraction <= th.max_error_fraction or (False, "not_language")


_LICENCE = re.compile(
    r"copyright|licen[cs]e|spdx-license-identifier|\(c\)\s*\d{4}|\u00a9|all rights reserved", re.I
)
# Licence boilerplate that need not name the licence: MIT's permission and warranty paragraphs, the
# GPL's "free software" and "distributed in the hope" ones.
_LICENCE_TEXT = re.compile(
    r"permission is hereby granted|without (?:any )?warrant|merchantability|redistribut|free software|"
    r"you may not use this file|this file is part of|released under|distributed under",
    re.I,
)

# Tool directives: they configure linters and stay even inside a licence block.
_DIRECTIVE = re.compile(
    r"\s*(?://|/\*|#|--|\{-|\(\*)\s*(?:ktlint-disable|ktlint:|eslint-disable|eslint-env|jshint|jscs:|"
    r"prettier-ignore|tslint:disable|@flow|@ts-nocheck|@jsx|noinspection|@formatter|-\*-|vim:|pylint:|"
    r"type:\s*ignore|nolint|swiftlint:|solhint-|slither-disable|luacheck:|hlint|ocamlformat|swiftformat:|"
    r"phpcs:|@phpstan|@psalm|clang-format|rubocop:|noqa|fmt:|detekt|istanbul ignore|c8 ignore)",
    re.I,
)


def _comment_block_end(lines: list[str], start: int, language: Language) -> int | None:
    """Index of the line after the comment block starting at ``lines[start]``; None if none starts."""
    if start >= len(lines):
        return None
    first = lines[start].lstrip()
    block = language.block_comment
    if block and first.startswith(block[0]):
        rest = "".join(lines[start:])
        offset = rest.find(block[1], rest.find(block[0]) + len(block[0]))
        if offset < 0:
            return None
        end = start + rest[:offset].count("\n") + 1
        if end == start + 1 and not re.search(r"\w", first):
            # A banner: a rule line, then one-line comments up to the same rule line again (OCaml's
            # `(*****)` / `(*  OCaml  *)` / ... / `(*****)`), read as one block.
            while end < len(lines) and lines[end].lstrip().startswith(block[0]):
                line = lines[end].rstrip()
                if not line.endswith(block[1]):
                    break
                end += 1
                if line.strip() == first.strip():
                    break
        return end
    if language.line_comment and first.startswith(language.line_comment):
        end = start
        while end < len(lines) and lines[end].lstrip().startswith(language.line_comment):
            end += 1
        return end
    if language.name == "python" and first.startswith(('"""', "'''")):
        rest = "".join(lines[start:])
        offset = rest.find(first[:3], rest.find(first[:3]) + 3)
        return None if offset < 0 else start + rest[:offset].count("\n") + 1
    return None


def _skippable(lines: list[str], index: int) -> bool:
    """A blank line, a shebang or a tool directive above or between the header's comment blocks."""
    line = lines[index]
    return not line.strip() or (index == 0 and line.startswith("#!")) or bool(_DIRECTIVE.match(line))


def header_end(lines: list[str], language: Language, limit: int = 400) -> int:
    """Index of the first line after the file's leading comment blocks (``lines`` keep their ends)."""
    index = 0
    while index < min(len(lines), limit):
        if _skippable(lines, index):
            index += 1
            continue
        end = _comment_block_end(lines, index, language)
        if end is None:
            break
        index = end
    return index


_DOC_TAG = re.compile(r"\s*[^\w\s@]*\s*@\w")


def _paragraphs(lines: list[str], start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) line ranges of the paragraphs inside a comment block: runs of lines with words,
    split at lines holding only comment markers and decoration, around directive lines and before
    each doc tag (``@module``, ``@license``: one tag is one paragraph)."""
    found: list[tuple[int, int]] = []
    run = None
    for index in range(start, end):
        words = re.search(r"\w", lines[index]) is not None
        directive = bool(_DIRECTIVE.match(lines[index]))
        tag = _DOC_TAG.match(lines[index]) is not None
        if run is not None and (not words or directive or tag):
            found.append((run, index))
            run = None
        if directive:
            found.append((index, index + 1))
        elif words and run is None:
            run = index
    if run is not None:
        found.append((run, end))
    return found


# Text beside the licence paragraphs that is documentation (kept) rather than a banner's title and
# authors (stripped with the licence): this many lines or words.
_DOC_MIN_LINES = 3
_DOC_MIN_WORDS = 12


def _is_licence(text: str) -> bool:
    return bool(_LICENCE.search(text) or _LICENCE_TEXT.search(text))


def _without_paragraphs(
    lines: list[str], start: int, end: int, drop: list[tuple[int, int]], language: Language
) -> list[str]:
    """The block's lines minus the ``drop`` paragraphs. Blank lines that a removed paragraph separated
    become one run (the later one), none at the edges of a line-comment block; an opening or closing
    marker on a removed line stays on a line of its own."""
    gone = {index for low, high in drop for index in range(low, high)}
    first = lines[start].lstrip()
    block = language.block_comment
    markers = (
        block
        if block and first.startswith(block[0])
        else (first[:3], first[:3])
        if language.name == "python" and first.startswith(('"""', "'''"))
        else None
    )
    kept: list[str] = []
    blank_run: list[int] = []  # positions in ``kept`` of the blank lines since the last text
    removed_since_blank = text_seen = False
    for index in range(start, end):
        line = lines[index]
        indent = line[: len(line) - len(line.lstrip())]
        if index in gone:
            removed_since_blank = True
            if markers is None:
                continue
            if index == start and line.lstrip().startswith(markers[0]):
                opener = re.match(r"\S*", line.lstrip()).group(0)  # `/**`, `{-|`, `(*` ...
                kept.append(indent + (opener if markers[1] not in opener else markers[0]) + "\n")
            elif index == end - 1 and markers[1] in line:
                while blank_run:
                    del kept[blank_run.pop()]
                kept.append(indent + markers[1] + line[line.rindex(markers[1]) + len(markers[1]) :])
            continue
        edge = markers is not None and index in (start, end - 1)
        if re.search(r"\w", line) or edge:
            kept.append(line)
            blank_run, removed_since_blank = [], False
            text_seen = text_seen or not edge
            continue
        if removed_since_blank and not text_seen:
            continue  # no blank line between the opening marker and the first kept paragraph
        if removed_since_blank and blank_run:  # two runs met where a paragraph was: keep the later
            for position in reversed(blank_run):
                del kept[position]
            blank_run = []
        removed_since_blank = False
        blank_run.append(len(kept))
        kept.append(line)
    if markers is None:  # a line-comment block: no blank comment line where a paragraph went
        content = [index for index in range(start, end) if re.search(r"\w", lines[index])]
        while content[-1] in gone and kept and not re.search(r"\w", kept[-1]):
            kept.pop()
        while content[0] in gone and kept and not re.search(r"\w", kept[0]):
            kept.pop(0)
    return kept


def strip_licence(text: str, language: Language) -> tuple[str, bool]:
    """Remove the licence paragraphs of the leading comment blocks (stacked ones too): a block that
    is all licence goes whole; in a block that also documents the module (Haddock, LDoc, a Javadoc
    header) only the paragraphs naming the copyright or licence go. Shebangs and tool directives
    (``// ktlint-disable``, ``// solhint-disable``) always stay. Return (text, stripped)."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    index, stripped = 0, False
    while True:
        while index < len(lines) and _skippable(lines, index):
            if lines[index].strip():
                kept.append(lines[index])
            index += 1
        end = _comment_block_end(lines, index, language)
        if end is None:
            break
        paragraphs = _paragraphs(lines, index, end)
        licence = [
            (low, high)
            for low, high in paragraphs
            if not _DIRECTIVE.match(lines[low]) and _is_licence("".join(lines[low:high]))
        ]
        if not licence:
            break
        stripped = True
        rest = [(low, high) for low, high in paragraphs if (low, high) not in licence]
        docs = [(low, high) for low, high in rest if not _DIRECTIVE.match(lines[low])]
        doc_lines = sum(high - low for low, high in docs)
        doc_words = sum(len(re.findall(r"\w+", "".join(lines[low:high]))) for low, high in docs)
        banner = (
            end - index > 1
            and not re.search(r"\w", lines[index])
            and lines[index].strip() == lines[end - 1].strip()
        )
        if banner or (doc_lines < _DOC_MIN_LINES and doc_words < _DOC_MIN_WORDS):
            # All licence, or a banner's title and authors around it: the block goes.
            kept.extend(lines[low] for low, high in rest if (low, high) not in docs)
            index = end
            continue
        kept.extend(_without_paragraphs(lines, index, end, licence, language))
        index = end
        break  # a block documenting the module ends the header
    if not stripped:
        return text, False
    return "".join(kept) + "".join(lines[index:]), True
