"""Filter steps: each answers True (keep) or (False, reason); plus the licence-header strip transform.

Thresholds follow bigcode's StarCoder data pipeline (max line 1000, mean line 100, alphanumeric
fraction 0.25, encoded runs of 64+ characters) and can be overridden per language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codetune.languages import Language, parse, unparsed_fraction

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
        # A stray NUL (seen in real doc comments) stops tree-sitter; a space keeps every offset.
        text = doc.text.replace("\0", " ")
        doc.meta["tree"] = parse(doc.language, text) if doc.language.grammar else None
    return doc.meta["tree"]


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


@register_filter("generated")
def _generated(doc: Doc, th: Thresholds) -> Verdict:
    head = "\n".join(doc.text.splitlines()[: th.generated_lines]).lower()
    return not any(marker in head for marker in th.generated_markers) or (False, "generated")


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


# String literals: triple-quoted (Python, Kotlin, Scala, Swift, Julia), "..." and '...' with escapes,
# and JS template literals. A literal over the limit is test data or an embedded blob.
_LITERAL = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_LITERAL_BACKTICK = re.compile(_LITERAL.pattern + r"|`[^`]*`")
_BACKTICK_LANGUAGES = {"javascript", "typescript", "go"}  # template literals / raw strings
_DOCSTRING_PREFIX = re.compile(r"\s*[rRuUbBfF]{0,2}")


@register_filter("long_literal")
def _long_literal(doc: Doc, th: Thresholds) -> Verdict:
    if len(doc.text) <= th.max_literal_chars:
        return True
    text = doc.text
    pattern = _LITERAL_BACKTICK if doc.language.name in _BACKTICK_LANGUAGES else _LITERAL
    for match in pattern.finditer(text):
        start = match.start()
        if match.end() - start <= th.max_literal_chars:
            continue
        # A triple-quoted string standing alone on its line is a docstring, not data.
        line_start = text.rfind("\n", 0, start) + 1
        if text.startswith(('"""', "'''"), start) and _DOCSTRING_PREFIX.fullmatch(text, line_start, start):
            continue
        return False, "long_literal"
    return True


@register_filter("not_language")
def _not_language(doc: Doc, th: Thresholds) -> Verdict:
    if doc.language.grammar is None:
        return True
    script = (
        doc.path.lower().endswith(doc.language.script_extensions) if doc.language.script_extensions else False
    )
    fraction = unparsed_fraction(doc.language, doc.text.replace("\0", " "), script, syntax_tree(doc))
    doc.meta["error_fraction"] = round(fraction, 4)
    return fraction <= th.max_error_fraction or (False, "not_language")


_LICENCE = re.compile(r"copyright|licen[cs]e|spdx-license-identifier|\(c\)\s*\d{4}|all rights reserved", re.I)


# Tool directives that may sit above a licence header and must stay (they configure linters).
_DIRECTIVE = re.compile(
    r"\s*(?://|/\*|#|--|\{-)\s*(?:ktlint-disable|ktlint:|eslint-disable|eslint-env|jshint|jscs:|"
    r"prettier-ignore|tslint:disable|@flow|@ts-nocheck|@jsx|noinspection|@formatter|-\*-|vim:|pylint:|"
    r"type:\s*ignore|nolint|swiftlint:)",
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
        return None if offset < 0 else start + rest[:offset].count("\n") + 1
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


def strip_licence(text: str, language: Language) -> tuple[str, bool]:
    """Remove leading comment blocks that mention copyright/licence/SPDX (stacked ones too); keep a
    shebang and tool directives above them (``// ktlint-disable``, ``/* eslint-disable */``).
    Return (text, stripped)."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    index, stripped = 0, False
    while True:
        while index < len(lines) and (
            not lines[index].strip()
            or (index == 0 and lines[index].startswith("#!"))
            or _DIRECTIVE.match(lines[index])
        ):
            if lines[index].strip():
                kept.append(lines[index])
            index += 1
        end = _comment_block_end(lines, index, language)
        if end is None or not _LICENCE.search("".join(lines[index:end])):
            break
        index, stripped = end, True
    if not stripped:
        return text, False
    return "".join(kept) + "".join(lines[index:]), True
