"""CodeXGLUE's evaluators, re-implemented so that numbers equal the published ones to 2 decimals.

Two styles, matching microsoft/CodeXGLUE:

* ``codexglue-method`` (Code-Code/Method-Generation/evaluator): each line is post-processed
  (``<EOL>``/``<INDENT>``/``<DEDENT>`` and literal placeholders replaced, whitespace collapsed) and
  compared with fuzzywuzzy's ``fuzz.ratio``; BLEU is the smoothed corpus BLEU-4 of its ``bleu.py``
  on whitespace tokens of the *raw* stripped lines.
* ``codexglue-line`` (Code-Code/CodeCompletion-line/evaluator): references are ``{"gt": ...}``
  JSON lines; only literal placeholders are replaced (no whitespace collapse) and exact match is
  whitespace-token equality.

``fuzz.ratio`` with python-Levenshtein is ``int(round(100 * (lensum - indel) / lensum))`` with
Python's round-half-to-even, 100 for equal strings and 0 when exactly one is empty; we compute the
integer InDel distance with rapidfuzz and do the same float arithmetic so every sample is identical.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def _replace_literals(code: str) -> str:
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    # CodeXGLUE replaces each found literal's full text (str.replace, all occurrences) in order.
    for kind, value in _LITERAL.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def post_process_method(code: str) -> str:
    """The Method-Generation evaluator's post-processing: layout tokens, literals, collapsed spaces."""
    code = code.replace("<EOL>", "\n").replace("<INDENT>", " ").replace("<DEDENT>", " ")
    return " ".join(_replace_literals(code).split())


def post_process_line(code: str) -> str:
    """The CodeCompletion-line evaluator's post-processing: literal placeholders only."""
    return _replace_literals(code)


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's ``fuzz.ratio`` (python-Levenshtein backend), computed with rapidfuzz."""
    from rapidfuzz.distance import Indel

    if a == b:
        return 100
    if not a or not b:
        return 0
    lensum = len(a) + len(b)
    return int(round(100 * ((lensum - Indel.distance(a, b)) / lensum)))


def fuzz_ratios(preds: Sequence[str], refs: Sequence[str]) -> list[int]:
    """``fuzz_ratio`` over aligned lists, with the distances computed in one rapidfuzz call."""
    from rapidfuzz.distance import Indel
    from rapidfuzz.process import cpdist

    if not preds:
        return []
    distances = cpdist(list(preds), list(refs), scorer=Indel.distance, workers=1)
    out = []
    for a, b, dist in zip(preds, refs, distances.tolist()):
        if a == b:
            out.append(100)
        elif not a or not b:
            out.append(0)
        else:
            lensum = len(a) + len(b)
            out.append(int(round(100 * ((lensum - dist) / lensum))))
    return out


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        counts.update(zip(*(tokens[i:] for i in range(order))))
    return counts


def corpus_bleu(
    references: Sequence[list[str]],
    translations: Sequence[list[str]],
    max_order: int = 4,
    smooth: bool = True,
) -> float:
    """Corpus BLEU in [0, 1] as CodeXGLUE's ``bleu.py`` computes it (Lin & Och add-one smoothing).

    CodeXGLUE divides by zero on an all-empty side; here empty translations give 0 and empty
    references a brevity penalty of 1.
    """
    matches = [0] * max_order
    possible = [0] * max_order
    ref_len = trans_len = 0
    for ref, trans in zip(references, translations):
        ref_len += len(ref)
        trans_len += len(trans)
        overlap = _ngrams(trans, max_order) & _ngrams(ref, max_order)
        for gram, count in overlap.items():
            matches[len(gram) - 1] += count
        for order in range(1, max_order + 1):
            if len(trans) - order + 1 > 0:
                possible[order - 1] += len(trans) - order + 1
    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo_mean = (
        math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0
    )
    if trans_len == 0:
        return 0.0
    ratio = trans_len / ref_len if ref_len else math.inf
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return geo_mean * bp


def _check(references: Sequence[str], predictions: Sequence[str]) -> int:
    from codetune.errors import InputError

    if len(references) != len(predictions):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references; they must match")
    if not references:
        raise InputError("nothing to score: no references")
    return len(references)


def score_method(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float | int]:
    """Method-Generation scores (ES, BLEU, plus exact match of the post-processed strings), in percent."""
    n = _check(references, predictions)
    preds = [post_process_method(p.strip()) for p in predictions]
    gts = [post_process_method(g.strip()) for g in references]
    edit_sim = sum(fuzz_ratios(preds, gts))
    exact = sum(p == g for p, g in zip(preds, gts))
    bleu = corpus_bleu([g.strip().split() for g in references], [p.strip().split() for p in predictions])
    return {
        "exact_match": round(exact / n * 100, 2),
        "edit_sim": round(edit_sim / n, 2),
        "bleu": round(100 * bleu, 2),
        "n": n,
    }


def score_line(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float | int]:
    """CodeCompletion-line scores (EM, ES); plus ``bleu.py``'s BLEU on the post-processed strings (not in CodeXGLUE)."""
    n = _check(references, predictions)
    preds = [post_process_line(p.strip()) for p in predictions]
    gts = [post_process_line(g) for g in references]
    edit_sim = sum(fuzz_ratios(preds, gts))
    exact = sum(p.split() == g.split() for p, g in zip(preds, gts))
    bleu = corpus_bleu([g.strip().split() for g in gts], [p.strip().split() for p in preds])
    return {
        "exact_match": round(exact / n * 100, 2),
        "edit_sim": round(edit_sim / n, 2),
        "bleu": round(100 * bleu, 2),
        "n": n,
    }


STYLES = {"codexglue-method": score_method, "codexglue-line": score_line}
