"""Edit similarity + BLEU over many pairs: codetune (rapidfuzz, Counter n-grams) vs a plain-Python reference.

The reference is written here the way CodeXGLUE's evaluator runs with fuzzywuzzy: a pure-Python
Levenshtein ratio per pair (InDel distance, as python-Levenshtein's ratio), fuzzywuzzy's
decorators and rounding, and ``bleu.py``'s tuple-slicing n-gram counting.

    python bench/metrics.py [--pairs 100000]
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import time

from codetune.evaluate.codexglue import score_method

WORDS = [
    "def",
    "return",
    "self",
    "x",
    "y",
    "=",
    "(",
    ")",
    ":",
    "+",
    "if",
    "for",
    "in",
    "len",
    "[",
    "]",
    "0",
    "1",
    "print",
    "<NUM_LIT>",
    "<STR_LIT:ok>",
    "<EOL>",
    "None",
    "é",
    "λ",
    "items",
]


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Code-like lines (CodeXGLUE-tokenised style): 0-24 tokens from keywords and 5000 identifiers."""
    rng = random.Random(seed)
    names = [
        f"{rng.choice(['get', 'set', 'is', 'to', 'on'])}_{rng.choice(['value', 'item', 'node'])}{i}"
        for i in range(5000)
    ]
    words = WORDS * 40 + names
    refs, preds = [], []
    for _ in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(0, 24))]
        pred = [w if rng.random() < 0.7 else rng.choice(words) for w in ref[: rng.randint(0, len(ref))]]
        pred += [rng.choice(words) for _ in range(rng.randint(0, 3))]
        refs.append(" ".join(ref))
        preds.append(" ".join(pred))
    return refs, preds


# ---- the plain-Python reference --------------------------------------------------------------------
def ref_post_process(code: str) -> str:
    import re

    code = code.replace("<EOL>", "\n").replace("<INDENT>", " ").replace("<DEDENT>", " ")
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for lit in re.findall(re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S), code):
        code = code.replace(f"<{lit[0]}_LIT:{lit[1]}>", lit[1])
    return " ".join(code.split())


def ref_indel(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = prev[j - 1] if ca == cb else min(prev[j], cur[j - 1]) + 1
        prev = cur
    return prev[-1]


def ref_ratio(a: str, b: str) -> int:
    if a is None or b is None:
        return 0
    if a == b:
        return 100
    if len(a) == 0 or len(b) == 0:
        return 0
    lensum = len(a) + len(b)
    return round(100 * ((lensum - ref_indel(a, b)) / lensum))


def ref_ngrams(segment, max_order):
    counts = collections.Counter()
    for order in range(1, max_order + 1):
        for i in range(0, len(segment) - order + 1):
            counts[tuple(segment[i : i + order])] += 1
    return counts


def ref_bleu(reference_corpus, translation_corpus, max_order=4):
    matches = [0] * max_order
    possible = [0] * max_order
    ref_len = trans_len = 0
    for references, translation in zip(reference_corpus, translation_corpus):
        ref_len += min(len(r) for r in references)
        trans_len += len(translation)
        merged = collections.Counter()
        for reference in references:
            merged |= ref_ngrams(reference, max_order)
        overlap = ref_ngrams(translation, max_order) & merged
        for ngram in overlap:
            matches[len(ngram) - 1] += overlap[ngram]
        for order in range(1, max_order + 1):
            if len(translation) - order + 1 > 0:
                possible[order - 1] += len(translation) - order + 1
    precisions = [(matches[i] + 1.0) / (possible[i] + 1.0) for i in range(max_order)]
    geo = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0
    ratio = float(trans_len) / ref_len
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return geo * bp


def reference_scores(refs: list[str], preds: list[str]) -> dict:
    n = len(refs)
    edit_sim = sum(
        ref_ratio(ref_post_process(p.strip()), ref_post_process(g.strip())) for p, g in zip(preds, refs)
    )
    bleu = round(100 * ref_bleu([[g.strip().split()] for g in refs], [p.strip().split() for p in preds]), 2)
    return {"edit_sim": round(edit_sim / n, 2), "bleu": round(bleu, 2), "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    args = parser.parse_args()
    refs, preds = make_pairs(args.pairs)

    start = time.perf_counter()
    ours = score_method(refs, preds)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = reference_scores(refs, preds)
    t_ref = time.perf_counter() - start

    same = all(ours[k] == theirs[k] for k in ("edit_sim", "bleu", "n"))
    print(f"pairs: {args.pairs}")
    print(f"codetune:  {t_ours:8.3f}s  edit_sim={ours['edit_sim']} bleu={ours['bleu']}")
    print(f"reference: {t_ref:8.3f}s  edit_sim={theirs['edit_sim']} bleu={theirs['bleu']}")
    print(f"numbers identical: {same}")
    if not same:
        raise SystemExit("numbers differ")
    print(
        f"ratio: {t_ref / t_ours:.2f}x codetune vs plain-Python reference (edit sim + BLEU, {args.pairs} pairs)"
    )


if __name__ == "__main__":
    main()
