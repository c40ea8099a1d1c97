"""Suggest less: thresholds fitted on synthetic records whose right answer is counted independently."""

from __future__ import annotations

import json
import math
import random

import pytest
from tests.helpers.feedback import completion, verdict, write

from codetune.artifacts.records import Labeled
from codetune.errors import InputError
from codetune.feedback.confidence import ConfidenceGate, fit_gate, gate_report, min_confidence, suggest_less


def labeled(ident, logprob, accepted, text="a + b", seconds=0.0) -> Labeled:
    return Labeled(completion(ident, seconds, text=text, mean_logprob=logprob), accepted, None, True)


def graded_records():
    """200 completions, mean log-probability 0 down to -3.98; acceptance mostly (not only) at the top."""
    items = []
    for k in range(200):
        accepted = (k % 3 != 0 and k < 120) or k % 7 == 0
        items.append(labeled(f"c{k}", -k / 50, accepted))
    items.append(labeled("no-logprob", None, True))  # cannot be scored: not counted
    items.append(labeled("undecided", -0.1, None))
    return items


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_keeps_the_share_of_accepted_asked_for(keep):
    items = graded_records()
    gate = fit_gate(items, keep_accepted=keep)
    scored = [(item.completion.mean_logprob, item.accepted) for item in items[:200]]
    accepted_scores = [s for s, a in scored if a]
    # Brute force: the highest candidate threshold that still keeps the share asked for.
    best = max(
        t for t in set(accepted_scores) if sum(s >= t for s in accepted_scores) >= keep * len(accepted_scores)
    )
    assert gate.threshold == best
    report = gate_report(gate, items)
    removed = sum(1 for s, _ in scored if s < best)
    lost = sum(1 for s, a in scored if a and s < best)
    assert (report["suggestions"], report["accepted"]) == (200, len(accepted_scores))
    assert (report["removed"], report["accepted_lost"]) == (removed, lost)
    assert report["accepted_lost_share"] <= 1 - keep + 1e-9
    kept = [(s, a) for s, a in scored if s >= best]
    assert report["acceptance_rate_after"] == round(sum(a for _, a in kept) / len(kept), 4)
    assert report["acceptance_rate_after"] >= report["acceptance_rate_before"]


def test_logistic_gate_uses_what_the_log_probability_misses():
    """Acceptance here depends on the suggestion's length only: the log-probability is noise. The
    logistic gate finds that and removes the long suggestions; the log-probability gate cannot."""
    rng = random.Random(0)
    items = []
    for k in range(400):
        long = k % 2 == 0
        text = "x = compute(a, b, c)\n" * (6 if long else 1)
        accepted = (not long and rng.random() < 0.9) or (long and rng.random() < 0.05)
        items.append(labeled(f"c{k}", rng.uniform(-3, 0), accepted, text))
    plain = gate_report(fit_gate(items, 0.9), items)
    smart = gate_report(fit_gate(items, 0.9, "logistic"), items)
    rejected_long = sum(1 for i in items if not i.accepted and i.completion.text.count("\n") > 1)
    assert smart["accepted_lost_share"] <= 0.1 and plain["accepted_lost_share"] <= 0.1
    assert smart["removed"] >= 0.9 * rejected_long
    assert plain["removed"] < 0.25 * len(items)
    assert smart["acceptance_rate_after"] > 0.8 > plain["acceptance_rate_after"]


def test_suggest_less_reports_on_held_out_newer_records(tmp_path):
    rows = []
    for k in range(120):
        logprob = -k / 40
        rows += [
            completion(f"c{k}", k, mean_logprob=logprob),
            verdict(f"c{k}", k % 4 != 0 and k < 80, k + 0.5),
        ]
    write(tmp_path, rows)
    gate, report = suggest_less(tmp_path, keep_accepted=0.9, holdout=0.25)
    assert report["fit"]["suggestions"] == 90 and report["held_out"]["suggestions"] == 30
    # The newest 30 (k = 90..119) are all rejected and all below the threshold fitted on k < 90.
    assert report["held_out"]["accepted"] == 0 and report["held_out"]["removed"] == 30
    fitted = fit_gate(
        [
            Labeled(completion(f"c{k}", k, mean_logprob=-k / 40), k % 4 != 0 and k < 80, None, True)
            for k in range(90)
        ],
        0.9,
    )
    assert gate == fitted
    assert ConfidenceGate.from_dict(gate.to_dict()) == gate


def test_min_confidence_specs(tmp_path):
    assert min_confidence(None) is None and min_confidence("") is None
    fixed = min_confidence("-1.5")
    assert fixed.allows(completion("a", mean_logprob=-1.0)) and not fixed.allows(
        completion("b", mean_logprob=-2.0)
    )
    assert fixed.allows(completion("c"))  # no log-probability: shown
    for bad in ("abc", "0.5", "nan", "-inf"):
        with pytest.raises(InputError, match="min-confidence"):
            min_confidence(bad)
    with pytest.raises(InputError, match="needs records"):
        min_confidence("auto")
    write(tmp_path, [completion(f"c{k}", k, mean_logprob=-k / 10) for k in range(30)])
    with pytest.raises(InputError, match="have 0"):
        min_confidence("auto", tmp_path)  # no feedback at all: one clear error


def test_a_gate_needs_both_verdicts():
    with pytest.raises(InputError, match=r"have 30 \(30 accepted\)"):
        fit_gate([labeled(f"c{k}", -k / 10, True) for k in range(30)])
    with pytest.raises(InputError, match="keep_accepted"):
        fit_gate(graded_records(), keep_accepted=0)
    with pytest.raises(InputError, match="unknown confidence signal"):
        fit_gate(graded_records(), signal="vibes")
    assert math.isinf(ConfidenceGate("mean_logprob", -math.inf).threshold)


def test_records_stats_reports_what_a_threshold_would_remove(tmp_path, cli):
    rows = []
    for k in range(80):
        rows += [
            completion(f"c{k}", k, mean_logprob=-k / 20),
            verdict(f"c{k}", k < 40 and k % 5 != 0, k + 0.5),
        ]
    write(tmp_path, rows)
    done = cli("records", "stats", str(tmp_path), "--keep-accepted", "0.9", "--holdout", "0", "--json")
    assert done.returncode == 0, done.stderr
    fit = json.loads(done.stdout)["confidence"]["fit"]
    accepted = [k for k in range(80) if k < 40 and k % 5 != 0]  # 32 accepted, kept: the 29 best
    threshold = -sorted(accepted)[28] / 20
    assert fit["threshold"] == threshold
    assert fit["removed"] == sum(1 for k in range(80) if -k / 20 < threshold) and fit["accepted_lost"] == 3
