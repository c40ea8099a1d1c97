"""Filter steps: each answers True (keep) or (False, reason); plus the licence-header strip transform.

Thresholds follow bigcode's StarCoder data pipeline (max line 1000, mean line 100, alphanumeric
fraction 0.25, encoded runs of 64+ characters) and can be overridden per language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codetune.languages import Language, unparsed_fraction

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


@register_filter("empty")
def _empty(doc: Doc, th: Thresholds) -> Verdict:
    return bool(doc.text.strip()) or (False, "empty")


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


@register_filter("max_line_length")
def _max_line_length(doc: Doc, th: Thresholds) -> Verdict:
    longest = max((len(line) for line in doc.text.splitlines()), default=0)
    return longest <= th.max_line_length or (False, "max_line_length")


@register_filter("mean_line_length")
def _mean_line_length(doc: Doc, th: Thresholds) -> Verdict:
    lines = doc.text.splitlines() or [""]
    return sum(map(len, lines)) / len(lines) <= th.max_mean_line_length or (False, "mean_line_length")


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
    fraction = unparsed_fraction(doc.language, doc.text, script)
    doc.meta["error_fraction"] = round(fraction, 4)
    return fraction <= th.max_error_fraction or (False, "not_language")


_LICENCE = re.compile(r"copyright|licen[cs]e|spdx-license-identifier|\(c\)\s*\d{4}|all rights reserved", re.I)


def strip_licence(text: str, language: Language) -> tuple[str, bool]:
    """Remove a leading comment block that mentions copyright/licence/SPDX; return (text, stripped)."""
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and (lines[start].startswith("#!") or not lines[start].strip()):
        start += 1  # keep a shebang; skip blank lines before the header
    end = start
    block = language.block_comment
    stripped_first = lines[start].lstrip() if start < len(lines) else ""
    if block and stripped_first.startswith(block[0]):
        rest = "".join(lines[start:])
        offset = rest.find(block[1], rest.find(block[0]) + len(block[0]))
        if offset < 0:
            return text, False
        header = rest[: offset + len(block[1])]
        end = start + header.count("\n") + 1
    elif language.line_comment and stripped_first.startswith(language.line_comment):
        while end < len(lines) and lines[end].lstrip().startswith(language.line_comment):
            end += 1
        header = "".join(lines[start:end])
    elif language.name == "python" and stripped_first.startswith(('"""', "'''")):
        quote = stripped_first[:3]
        rest = "".join(lines[start:])
        offset = rest.find(quote, 3)
        if offset < 0:
            return text, False
        header = rest[: offset + 3]
        end = start + header.count("\n") + 1
    else:
        return text, False
    if not _LICENCE.search(header):
        return text, False
    while end < len(lines) and not lines[end].strip():
        end += 1
    return "".join(lines[:start] if lines[:start] and lines[0].startswith("#!") else []) + "".join(
        lines[end:]
    ), True
