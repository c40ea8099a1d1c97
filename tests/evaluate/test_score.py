"""CodeXGLUE-exact scores: hand-checked values through the public API and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from codetune.errors import InputError
from codetune.evaluate.codexglue import corpus_bleu, fuzz_ratio, post_process_line, post_process_method
from codetune.evaluate.tasks.benchmark import score_files

# (prediction, reference, hand-computed fuzz.ratio after Method-Generation post-processing)
METHOD_PAIRS = [
    ("return x", "return x + 1", 80),  # indel 4, lensum 20 -> 80
    ("", "pass", 0),  # an empty prediction scores 0
    ("a  =\tb", "a = b", 100),  # whitespace collapsed
    ("x = hi", "x = <STR_LIT:hi>", 100),  # literal placeholder with its value
    ("café", "cafe", 75),  # non-ASCII: indel 2, lensum 8 -> 75
    ("a", "abbbbbbbbbbbbbb", 12),  # 200 * 1 / 16 = 12.5 -> round-half-even -> 12, as fuzzywuzzy
]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_fuzz_ratio_matches_hand_values():
    for pred, ref, expected in METHOD_PAIRS:
        assert fuzz_ratio(post_process_method(pred), post_process_method(ref)) == expected, (pred, ref)
    assert fuzz_ratio("", "") == 100


def test_post_processing():
    assert post_process_method("if x :<EOL><INDENT>return <NUM_LIT><EOL><DEDENT>") == "if x : return 0"
    assert post_process_method("s = <STR_LIT> + <CHAR_LIT:c>") == "s = + c"
    assert post_process_line("a  = <NUM_LIT:42>") == "a  = 42"  # no whitespace collapse in the line style


def test_bleu_hand_values():
    assert corpus_bleu([["a", "b", "c", "d"]], [["a", "b", "c", "d"]]) == pytest.approx(1.0)
    # smoothed precisions all 1; brevity penalty exp(1 - 4/3)
    assert corpus_bleu([["a", "b", "c", "d"]], [["a", "b", "c"]]) == pytest.approx(0.716531, abs=1e-6)
    assert corpus_bleu([["a"]], [[]]) == 0.0


def test_bleu_on_corpora_shorter_than_the_max_order():
    # add-one smoothed precisions: 1-grams (0+1)/(1+1), 2..4-grams (0+1)/(0+1); no brevity penalty
    assert corpus_bleu([["a"]], [["b"]]) == pytest.approx(0.5**0.25)
    assert corpus_bleu([["a", "b"]], [["a"]]) == pytest.approx(math.exp(1 - 2 / 1))  # brevity only
    # two samples, one of one token: 1-grams 4 of 5 match, longer orders all match
    two = corpus_bleu([["a", "b", "c", "d"], ["x"]], [["a", "b", "c", "d"], ["y"]])
    assert two == pytest.approx((5 / 6) ** 0.25)


def test_score_method_style(tmp_path):
    refs = write(tmp_path / "answers.txt", [r for _, r, _ in METHOD_PAIRS])
    preds = write(tmp_path / "predictions.txt", [p for p, _, _ in METHOD_PAIRS])
    scores = score_files(refs, preds, style="codexglue-method")
    assert scores["n"] == 6
    assert scores["edit_sim"] == round((80 + 0 + 100 + 100 + 75 + 12) / 6, 2) == 61.17
    assert scores["exact_match"] == round(2 / 6 * 100, 2)
    assert 0 < scores["bleu"] < 100


def test_score_bleu_single_pair(tmp_path):
    refs = write(tmp_path / "r.txt", ["a b c d"])
    preds = write(tmp_path / "p.txt", ["  a b c  "])
    assert score_files(refs, preds)["bleu"] == 71.65


def test_score_line_style(tmp_path):
    gts = ["x = foo ( 1 )", "return <STR_LIT:ok>", "y  =  2", "print ( 'é' )"]
    refs = tmp_path / "answers.json"
    refs.write_text("".join(json.dumps({"gt": g}) + "\n" for g in gts), encoding="utf-8")
    preds = write(tmp_path / "predictions.txt", ["x = foo ( 1 )", "return ok", "y = 2", ""])
    scores = score_files(refs, preds, style="codexglue-line")
    # EM on whitespace tokens: 3 of 4; ES: 100, 100, "y = 2" vs "y  =  2" (indel 2, lensum 12 -> 83), 0
    assert scores["exact_match"] == 75.0
    assert scores["edit_sim"] == round((100 + 100 + 83 + 0) / 4, 2)


def test_score_errors(tmp_path):
    refs = write(tmp_path / "r.txt", ["a", "b"])
    preds = write(tmp_path / "p.txt", ["a"])
    with pytest.raises(InputError, match="1 predictions for 2 references"):
        score_files(refs, preds)
    with pytest.raises(InputError, match="JSON lines"):
        score_files(refs, write(tmp_path / "q.txt", ["a", "b"]), style="codexglue-line")
    with pytest.raises(InputError, match="unknown style"):
        score_files(refs, refs, style="rouge")


def test_cli_score_json(tmp_path):
    refs = write(tmp_path / "r.txt", [r for _, r, _ in METHOD_PAIRS])
    preds = write(tmp_path / "p.txt", [p for p, _, _ in METHOD_PAIRS])
    out = subprocess.run(
        [sys.executable, "-m", "codetune", "score", "-r", str(refs), "-p", str(preds), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    scores = json.loads(out.stdout)
    assert set(scores) == {"exact_match", "edit_sim", "bleu", "n"}
    assert scores["edit_sim"] == 61.17
    bad = subprocess.run(
        [sys.executable, "-m", "codetune", "score", "-r", str(refs), "-p", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "predictions file not found" in bad.stderr
    assert "Traceback" not in bad.stderr


# A plain transcription of CodeXGLUE's evaluator (fuzzywuzzy + python-Levenshtein ratio, bleu.py)
# to check the fast implementation sample by sample on random pairs.
def _ref_ratio(a: str, b: str) -> int:
    if a == b:
        return 100
    if not a or not b:
        return 0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = prev[j - 1] if ca == cb else min(prev[j], cur[j - 1]) + 1
        prev = cur
    lensum = len(a) + len(b)
    return int(round(100 * ((lensum - prev[-1]) / lensum)))  # noqa: RUF046 - fuzzywuzzy utils.intr


def _ref_bleu(refs: list[list[str]], trans: list[list[str]]) -> float:
    import collections
    import math

    def grams(seg):
        c = collections.Counter()
        for order in range(1, 5):
            for i in range(len(seg) - order + 1):
                c[tuple(seg[i : i + order])] += 1
        return c

    matches, possible, rl, tl = [0] * 4, [0] * 4, 0, 0
    for r, t in zip(refs, trans):
        rl += len(r)
        tl += len(t)
        overlap = grams(t) & grams(r)
        for g in overlap:
            matches[len(g) - 1] += overlap[g]
        for order in range(1, 5):
            if len(t) - order + 1 > 0:
                possible[order - 1] += len(t) - order + 1
    p = [(m + 1.0) / (q + 1.0) for m, q in zip(matches, possible)]
    geo = math.exp(sum(0.25 * math.log(x) for x in p))
    ratio = tl / rl
    return geo * (1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio))


def test_matches_plain_transcription_on_random_pairs():
    import random

    from codetune.evaluate.codexglue import score_method

    rng = random.Random(7)
    words = [
        "def",
        "x",
        "=",
        "(",
        ")",
        "<NUM_LIT>",
        "<STR_LIT:a b>",
        "<EOL>",
        "<INDENT>",
        "é",
        "日本",
        "  ",
        "ret",
    ]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 15))) for _ in range(300)]
    preds = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 15))) for _ in range(300)]
    ours = score_method(refs, preds)
    es = sum(
        _ref_ratio(post_process_method(p.strip()), post_process_method(g.strip()))
        for p, g in zip(preds, refs)
    )
    assert ours["edit_sim"] == round(es / 300, 2)
    bleu = _ref_bleu([g.strip().split() for g in refs], [p.strip().split() for p in preds])
    assert ours["bleu"] == round(100 * bleu, 2)
