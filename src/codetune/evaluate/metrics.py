"""One registry of metrics: each takes aligned predictions and references (and, for some, prompts
and a language) and returns one number. Percentages are 0..100, syntax rates 0..1.

``exact_match``/``edit_sim``/``bleu`` are CodeXGLUE's Method-Generation numbers (see codexglue.py);
``sacrebleu_bleu`` and ``chrf`` are sacrebleu's standard corpus scores, labelled as such.
"""

from __future__ import annotations

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
