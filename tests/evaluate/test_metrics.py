"""The metric registry, syntax validity (plain and truncation-aware) and FIM exact match."""

from __future__ import annotations

import pytest

from codetune.errors import ConfigError
from codetune.evaluate.metrics import METRICS, compute, get_metric
from codetune.evaluate.syntax import is_valid, syntax_validity, truncate_to_complete

ELM_PROMPT = "module Main exposing (..)\n\n\nadd : Int -> Int -> Int\nadd x y =\n"
GOOD = "    x + y\n"
CUT = "    x + y\n\n\nsub : Int -> Int -> Int\nsub x y =\n    x - (y"  # cut mid-expression
BAD = "    x + + ) y\n"


def test_registry_matrix():
    preds, refs = ["return x + 1", "print ( 'é' )"], ["return x + 1", "print ( 'e' )"]
    scores = compute([n for n in METRICS if not METRICS[n].needs_language], preds, refs)
    assert scores["exact_match"] == 50.0
    assert scores["fim_exact_match"] == 50.0
    assert scores["line_exact_match"] == 50.0
    assert scores["edit_sim"] == round((100 + 92) / 2, 2)  # 'é' vs 'e' in a 13-char line: 24/26 -> 92
    # CodeXGLUE's smoothed BLEU-4 by hand: 1..4-gram matches 7/8, 4/6, 2/4, 1/2, each taken as
    # (matches + 1) / (n-grams + 1); the lengths are equal, so no brevity penalty.
    assert scores["bleu"] == round(100 * (8 / 9 * 5 / 7 * 3 / 5 * 2 / 3) ** 0.25, 2)
    import sacrebleu

    assert scores["sacrebleu_bleu"] == round(sacrebleu.corpus_bleu(preds, [refs]).score, 2) == 61.8
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(preds, [refs]).score, 2)
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("rouge")


def test_fim_exact_match_strips():
    assert compute(["fim_exact_match"], ["  x = 1\n", "y"], ["x = 1", "z"]) == {"fim_exact_match": 50.0}


def test_syntax_validity_elm():
    assert is_valid("elm", ELM_PROMPT + GOOD)
    assert not is_valid("elm", ELM_PROMPT + CUT)
    kept = truncate_to_complete("elm", ELM_PROMPT, CUT)
    assert kept.startswith(GOOD) and "sub x y" not in kept  # cut after the last complete node
    assert truncate_to_complete("elm", ELM_PROMPT, BAD) is None
    result = syntax_validity("elm", [ELM_PROMPT, ELM_PROMPT], [[GOOD, CUT, BAD], [GOOD, GOOD]])
    assert [r["successes"] for r in result["rows"]] == [1, 2]
    assert result["rows"][0]["fails"] == 2
    assert result["rate"] == pytest.approx(3 / 5)
    truncated = syntax_validity("elm", [ELM_PROMPT], [[GOOD, CUT, BAD]], truncate=True)
    assert truncated["rate"] == pytest.approx(2 / 3)
    scores = compute(
        ["syntax_valid", "syntax_valid_truncated"],
        [GOOD, CUT],
        ["", ""],
        prompts=[ELM_PROMPT, ELM_PROMPT],
        language="elm",
    )
    assert scores == {"syntax_valid": 0.5, "syntax_valid_truncated": 1.0}
