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
from collections.abc import Sequence

_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def _replace_literals(code: str) -> str:
    if "<" not in code:
        return code
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    # CodeXGLUE replaces each found literal's full text (str.replace, all occurrences) in order.
    for kind, value in _LITERAL.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def post_process_method(code: str) -> str:
    """The Method-Generation evaluator's post-processing: layout tokens, literals, collapsed spaces."""
    if "<" in code:
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
    return round(100 * ((lensum - Indel.distance(a, b)) / lensum))


def fuzz_ratios(preds: Sequence[str], refs: Sequence[str]) -> list[int]:
    """``fuzz_ratio`` over aligned lists: one rapidfuzz call, then the same float arithmetic in numpy."""
    import numpy as np
    from rapidfuzz.distance import Indel
    from rapidfuzz.process import cpdist

    if not preds:
        return []
    dist = cpdist(list(preds), list(refs), scorer=Indel.distance, workers=1).astype(np.float64)
    lensum = np.fromiter(map(len, preds), np.float64, len(preds)) + np.fromiter(
        map(len, refs), np.float64, len(refs)
    )
    # Equal strings have distance 0 and exactly one empty string has distance lensum, so the formula
    # already gives fuzzywuzzy's 100 / 0 except for two empty strings. np.rint rounds half to even
    # like Python's round().
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.rint(100 * ((lensum - dist) / lensum))
    ratio[lensum == 0] = 100
    return ratio.astype(np.int64).tolist()


def _clipped_matches(references: Sequence[list[str]], translations: Sequence[list[str]], max_order: int):
    """Per order: sum over pairs of clipped n-gram matches, and of translation n-gram counts.

    Exact and vectorised: tokens become integer ids, k-grams get exact integer ids by repeated
    relabelling (np.unique), and counts per (gram, pair) are matched by sorting.
    """
    import numpy as np

    n = len(references)
    vocab: dict[str, int] = {}
    ids = np.fromiter(
        (vocab.setdefault(t, len(vocab)) for side in (references, translations) for seg in side for t in seg),
        np.int64,
    )
    lens = np.fromiter((len(seg) for side in (references, translations) for seg in side), np.int64, 2 * n)
    seg = np.repeat(np.arange(2 * n, dtype=np.int64), lens)
    ends = np.repeat(np.cumsum(lens), lens)
    remaining = ends - np.arange(len(ids), dtype=np.int64)  # tokens left in the segment from here
    is_trans = seg >= n
    pair = np.where(is_trans, seg - n, seg)
    trans_lens = lens[n:]
    matches, possible = [0] * max_order, [0] * max_order
    gram = ids.copy()
    base = max(len(vocab), 1)
    for k in range(1, max_order + 1):
        if k > 1:
            ext = np.zeros_like(gram)
            ext[: max(len(ids) - k + 1, 0)] = ids[k - 1 :]  # corpora shorter than k tokens too
            if len(gram) and (int(gram.max()) + 1) * base * max(n, 1) >= 2**62:
                # keep ids small enough for exact int64 keys: relabel to dense ids first
                gram = np.unique(gram, return_inverse=True)[1].astype(np.int64).reshape(-1)
            gram = gram * base + ext
        valid = remaining >= k
        possible[k - 1] = int(np.maximum(trans_lens - k + 1, 0).sum())
        if not valid.any():
            continue
        key = gram[valid] * max(n, 1) + pair[valid]
        side = is_trans[valid]
        t_keys, t_counts = np.unique(key[side], return_counts=True)
        r_keys, r_counts = np.unique(key[~side], return_counts=True)
        _, it, ir = np.intersect1d(t_keys, r_keys, assume_unique=True, return_indices=True)
        matches[k - 1] = int(np.minimum(t_counts[it], r_counts[ir]).sum())
    return matches, possible


def corpus_bleu(
    references: Sequence[list[str]],
    translations: Sequence[list[str]],
    max_order: int = 4,
    smooth: bool = True,
) -> float:
    """Corpus BLEU in [0, 1] as CodeXGLUE's ``bleu.py`` computes it (Lin & Och add-one smoothing).

    One reference per translation. CodeXGLUE divides by zero on an all-empty side; here empty
    translations give 0 and empty references a brevity penalty of 1.
    """
    references, translations = list(references), list(translations)[: len(references)]
    references = references[: len(translations)]
    matches, possible = _clipped_matches(references, translations, max_order)
    ref_len = sum(map(len, references))
    trans_len = sum(map(len, translations))
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


def _no_gc(func):
    # Building hundreds of thousands of small lists triggers the cyclic GC over and over; none of
    # them can form cycles, so scoring runs with it paused.
    import functools
    import gc

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


@_no_gc
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


@_no_gc
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


# ---------------------------------------------------------------- line predictions as CodeXGLUE tokens
# The line benchmark's ``gt`` is the output of CodeXGLUE's preprocessing
# (Code-Code/CodeCompletion-token/dataset/py150/preprocess.py: Python's ``tokenize``, tokens joined by
# one space, string literals as ``<STR_LIT>`` / ``<STR_LIT:value>``, numbers as ``<NUM_LIT>`` /
# ``<NUM_LIT:value>``, comments dropped; javaCorpus the same with a Java lexer). A model writes plain
# code, so its prediction is put through the same steps before scoring, or exact match is ~0.
# The value form is kept only for the literals of CodeXGLUE's literals.json, which we do not ship: a
# predicted literal keeps its value when the reference shows that value, else becomes the bare
# placeholder (equal to the reference's whenever the two literals agree).

_JAVA_TOKEN = re.compile(
    r"""(?P<str>"(?:\\.|[^"\\])*"?|'(?:\\.|[^'\\])*'?)"""
    r"|(?P<num>(?:0[xX][0-9a-fA-F_]+|\d[\d_]*\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[lLfFdD]?)"
    r"|(?P<comment>//.*|/\*.*?(?:\*/|$))"
    r"|(?P<name>[A-Za-z_$][\w$]*)"
    r"|(?P<op>>>>=|<<=|>>=|>>>|\.\.\.|->|::|\+\+|--|&&|\|\||[=!<>+\-*/%&|^]=|<<|>>|\S)",
    re.S,
)
_SPECIAL = {" ": "U+0020", ",": "U+002C"}


def _placeholders(reference: str) -> set[str]:
    return set(re.findall(r"<(?:STR|NUM|CHAR)_LIT(?::.*?)?>", reference, re.S))


def _string_token(token: str, known: set[str]) -> str:
    qualifier = re.match(r"^[a-zA-Z]*", token)[0]
    body = token[len(qualifier) :]
    quote = next((q for q in ("'''", '"""', "'", '"') if body.startswith(q)), "")
    inner = body[len(quote) :]
    end = quote if quote and inner.endswith(quote) and len(inner) >= len(quote) else ""
    inner = inner[: len(inner) - len(end)] if end else inner
    for char, code in _SPECIAL.items():
        inner = inner.replace(char, code)
    literal = f"<STR_LIT:{inner}>"
    return f"{qualifier}{quote}{literal if literal in known else '<STR_LIT>'}{end}"


def _number_token(token: str, known: set[str]) -> str:
    literal = f"<NUM_LIT:{token}>"
    return literal if literal in known else "<NUM_LIT>"


def _python_tokens(code: str, known: set[str]) -> list[str]:
    import io
    import tokenize

    out: list[str] = []
    fstring: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            kind, text = tokenize.tok_name[token.type], " ".join(token.string.split())
            if kind.startswith("FSTRING"):  # Python 3.12+ splits f-strings into parts: one literal here
                fstring.append(token.string)
                if kind == "FSTRING_END":
                    out.append(_string_token("".join(fstring), known))
                    fstring = []
            elif kind == "STRING":
                out.append(_string_token(text, known))
            elif kind == "NUMBER":
                out.append(_number_token(text, known))
            elif kind in {"NEWLINE", "NL"}:
                if out and out[-1] != "<EOL>":
                    out.append("<EOL>")
            elif kind not in {"COMMENT", "INDENT", "DEDENT", "ENCODING", "ENDMARKER"} and text:
                out.append(text)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a cut-off line (an open bracket or string): the tokens read so far
    while out and out[-1] == "<EOL>":
        out.pop()
    return out


def _java_tokens(code: str, known: set[str]) -> list[str]:
    out = []
    for match in _JAVA_TOKEN.finditer(code):
        kind, text = match.lastgroup, match.group()
        if kind == "str":
            out.append(_string_token(text, known) if text.startswith('"') else _char_token(text, known))
        elif kind == "num":
            out.append(_number_token(text, known))
        elif kind != "comment":
            out.append(text)
    return out


def _char_token(token: str, known: set[str]) -> str:
    literal = f"<CHAR_LIT:{token[1:-1]}>"
    return f"'{literal if literal in known else '<CHAR_LIT>'}'"


def tokenize_line(prediction: str, reference: str, language: str | None) -> str:
    """A generated line as CodeXGLUE's preprocessing writes ``gt``: tokens joined by single spaces."""
    known = _placeholders(reference)
    lexer = _python_tokens if (language or "python").lower() == "python" else _java_tokens
    return " ".join(lexer(prediction.strip(), known))


STYLES = {"codexglue-method": score_method, "codexglue-line": score_line}
