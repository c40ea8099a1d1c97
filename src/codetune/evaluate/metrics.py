"""One registry of metrics: each takes aligned predictions and references (and, for some, prompts
and a language) and returns one number. Percentages are 0..100, syntax rates 0..1.

``exact_match``/``edit_sim``/``bleu`` are CodeXGLUE's Method-Generation numbers (see codexglue.py);
``sacrebleu_bleu`` and ``chrf`` are sacrebleu's standard corpus scores, labelled as such.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codetune.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, a human label and what it needs."""

    name: str
    fn: Callable[..., float]
    label: str
    needs_language: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(name: str, label: str, needs_language: bool = False) -> Callable:
    """Decorator: add ``fn(predictions, references, prompts=None, language=None) -> float``."""

    def add(fn: Callable[..., float]) -> Callable[..., float]:
        METRICS[name] = Metric(name, fn, label, needs_language)
        return fn

    return add


def get_metric(name: str) -> Metric:
    """Look a metric up or fail with the known names."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


@register_metric("exact_match", "exact match % (CodeXGLUE post-processing, whitespace collapsed)")
def exact_match(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    from codetune.evaluate.codexglue import score_method

    return float(score_method(references, predictions)["exact_match"])


@register_metric("edit_sim", "edit similarity (CodeXGLUE fuzz.ratio mean, 0-100)")
def edit_sim(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    from codetune.evaluate.codexglue import fuzz_ratios, post_process_method

    preds = [post_process_method(p.strip()) for p in predictions]
    refs = [post_process_method(r.strip()) for r in references]
    return round(sum(fuzz_ratios(preds, refs)) / max(len(refs), 1), 2)


@register_metric("bleu", "BLEU-4 (CodeXGLUE bleu.py, smoothed, whitespace tokens, 0-100)")
def bleu(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    from codetune.evaluate.codexglue import corpus_bleu

    return round(
        100 * corpus_bleu([r.strip().split() for r in references], [p.strip().split() for p in predictions]),
        2,
    )


@register_metric("line_exact_match", "exact match % of whitespace tokens (CodeXGLUE line completion)")
def line_exact_match(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    from codetune.evaluate.codexglue import score_line

    return float(score_line(references, predictions)["exact_match"])


@register_metric("fim_exact_match", "FIM single-line exact match % (stripped equality, SantaCoder style)")
def fim_exact_match(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    if not references:
        return 0.0
    return round(
        100 * sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references), 2
    )


@register_metric("sacrebleu_bleu", "sacreBLEU corpus BLEU (13a tokenizer, 0-100)")
def sacrebleu_bleu(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score, 2)


@register_metric("chrf", "sacreBLEU chrF (0-100)")
def chrf(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score, 2)


@register_metric("syntax_valid", "syntax validity: prompt + completion parses (tree-sitter, 0-1)", True)
def syntax_valid(
    predictions: Sequence[str],
    references: Sequence[str] | None = None,
    *,
    prompts: Sequence[str],
    language: str,
    **_: Any,
) -> float:
    from codetune.evaluate.syntax import syntax_validity

    return round(syntax_validity(language, prompts, [[p] for p in predictions])["rate"], 4)


@register_metric(
    "syntax_valid_truncated", "syntax validity after cutting at the last complete top-level node (0-1)", True
)
def syntax_valid_truncated(
    predictions: Sequence[str],
    references: Sequence[str] | None = None,
    *,
    prompts: Sequence[str],
    language: str,
    **_: Any,
) -> float:
    from codetune.evaluate.syntax import syntax_validity

    return round(syntax_validity(language, prompts, [[p] for p in predictions], truncate=True)["rate"], 4)


def compute(
    names: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    prompts: Sequence[str] | None = None,
    language: str | None = None,
) -> dict[str, float]:
    """Compute several metrics; language-needing ones are skipped when no language is known."""
    out = {}
    for name in names:
        metric = get_metric(name)
        if metric.needs_language and (language is None or prompts is None):
            continue
        out[name] = metric.fn(predictions, references, prompts=prompts, language=language)
    return out


def first_line(text: str) -> str:
    """What a single-line editor shows: the completion up to its first newline, stripped."""
    return text.split("\n", 1)[0].strip()


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifiers(text: str, language: str | None = None) -> list[str]:
    """Identifiers in order (CrossCodeEval's identifier match): tree-sitter leaves when the language is
    known, else names that are not keywords of Python/C-like languages."""
    if language is not None:
        from codetune.languages import get_language, parse

        tree = parse(get_language(language), text)
        found: list[str] = []
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if node.child_count == 0 and "identifier" in node.type:
                found.append(node.text.decode("utf-8", "replace"))
            stack.extend(reversed(node.children))
        return found
    return [name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS]


_KEYWORDS = frozenset(keyword.kwlist) | {
    "if", "else", "for", "while", "return", "function", "var", "let", "const", "class", "new", "this",
    "fun", "val", "public", "private", "static", "void", "int", "true", "false", "null", "case", "of",
    "module", "exposing", "import", "type", "alias", "then", "in",
}  # fmt: skip


@register_metric(
    "first_line_exact_match", "first-line exact match %: the first line shown equals the truth's"
)
def first_line_exact_match(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    if not references:
        return 0.0
    hits = sum(first_line(p) == first_line(r) for p, r in zip(predictions, references))
    return round(100 * hits / len(references), 2)


def _identifier_scores(prediction: str, reference: str, language: str | None) -> tuple[bool, float]:
    pred, ref = identifiers(first_line(prediction), language), identifiers(first_line(reference), language)
    if not pred and not ref:
        return True, 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return pred == ref, 0.0
    precision, recall = common / len(pred), common / len(ref)
    return pred == ref, 2 * precision * recall / (precision + recall)


@register_metric(
    "identifier_em", "identifier exact match %: the first line's identifiers equal the truth's, in order"
)
def identifier_em(
    predictions: Sequence[str], references: Sequence[str], language: str | None = None, **_: Any
) -> float:
    scores = [_identifier_scores(p, r, language)[0] for p, r in zip(predictions, references)]
    return round(100 * sum(scores) / max(len(scores), 1), 2)


@register_metric(
    "identifier_f1", "identifier F1 %: multiset overlap of the first line's identifiers with the truth's"
)
def identifier_f1(
    predictions: Sequence[str], references: Sequence[str], language: str | None = None, **_: Any
) -> float:
    scores = [_identifier_scores(p, r, language)[1] for p, r in zip(predictions, references)]
    return round(100 * sum(scores) / max(len(scores), 1), 2)


def accepts(prediction: str, reference: str) -> bool:
    """The acceptance proxy of one suggestion: its first line is not empty and begins the reference's
    (what the developer typed there), so taking it saves typing and costs no edit."""
    shown = prediction.split("\n", 1)[0].rstrip()
    return bool(shown.strip()) and reference.split("\n", 1)[0].startswith(shown)


@register_metric("accepted", "acceptance proxy %: the shown line is non-empty and a prefix of the truth")
def accepted(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    hits = sum(accepts(p, r) for p, r in zip(predictions, references))
    return round(100 * hits / max(len(references), 1), 2)


@register_metric(
    "accepted_chars", "accepted characters per request: length of the shown line when it is accepted"
)
def accepted_chars(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    chars = [
        len(p.split("\n", 1)[0].rstrip()) if accepts(p, r) else 0 for p, r in zip(predictions, references)
    ]
    return round(sum(chars) / max(len(chars), 1), 2)


@register_metric("empty_rate", "empty-completion rate %: nothing would be shown")
def empty_rate(predictions: Sequence[str], references: Sequence[str], **_: Any) -> float:
    return round(100 * sum(not first_line(p) for p in predictions) / max(len(predictions), 1), 2)
