"""Suggest less, be accepted more: a confidence threshold fitted on what developers accepted.

The signal is a completion's mean token log-probability, or (``signal="logistic"``) the
probability of acceptance from a small logistic model on it and a few features of the prompt and
the suggestion (its length and lines, the prefix's length, whether the cursor starts a line,
whether a suffix was sent, whether generation hit the length limit). The threshold is the
highest that keeps at least ``keep_accepted`` of the accepted completions it was fitted on;
everything below it would not be shown.

``serve --min-confidence auto|X`` (phase 2) calls :func:`min_confidence` once and
:meth:`ConfidenceGate.allows` with every completion's record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codetune.artifacts.records import CompletionRecord, Labeled, read_records
from codetune.errors import InputError

SIGNALS = ("mean_logprob", "logistic")
FEATURES = (
    "mean_logprob",
    "log_text_chars",
    "text_lines",
    "log_prefix_chars",
    "at_line_start",
    "has_suffix",
    "hit_length_limit",
)
# Fewer decided completions than this cannot place a threshold with any meaning.
MIN_DECIDED = 20
L2 = 1e-2


def features(
    prefix: str, suffix: str | None, text: str, mean_logprob: float, finish_reason: str | None = None
) -> list[float]:
    """The logistic model's inputs for one completion, in ``FEATURES`` order."""
    last_line = prefix.rsplit("\n", 1)[-1]
    return [
        float(mean_logprob),
        math.log1p(len(text)),
        float(text.count("\n") + 1),
        math.log1p(len(prefix)),
        1.0 if not last_line.strip() else 0.0,
        1.0 if suffix else 0.0,
        1.0 if finish_reason == "length" else 0.0,
    ]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class ConfidenceGate:
    """Show a completion only when its score reaches ``threshold`` (None: a score cannot be made)."""

    signal: str
    threshold: float
    keep_accepted: float | None = None
    # logistic only: bias first, then one weight per FEATURES entry, on standardised features
    weights: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)

    def score(self, completion: CompletionRecord) -> float | None:
        """The signal for one completion: its mean log-probability, or its logistic P(accepted)."""
        c = completion
        if c.mean_logprob is None or not math.isfinite(c.mean_logprob):
            return None
        if self.signal == "mean_logprob":
            return float(c.mean_logprob)
        x = features(c.prefix, c.suffix, c.text, c.mean_logprob, c.finish_reason)
        z = self.weights[0] + sum(
            w * (v - m) / s for w, v, m, s in zip(self.weights[1:], x, self.means, self.scales, strict=True)
        )
        return _sigmoid(z)

    def allows(self, completion: CompletionRecord) -> bool:
        """Whether to show the completion; one without a score (no log-probability) is shown."""
        value = self.score(completion)
        return value is None or value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceGate:
        return cls(**data)


def _decided(items: Sequence[Labeled]) -> list[Labeled]:
    return [
        item
        for item in items
        if item.accepted is not None
        and item.completion.mean_logprob is not None
        and math.isfinite(item.completion.mean_logprob)
    ]


def _fit_logistic(rows: list[list[float]], labels: list[int]) -> tuple[list[float], list[float], list[float]]:
    """Weights (bias first) of an L2-regularised logistic regression, by Newton's method (IRLS)."""
    import numpy as np

    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales < 1e-12] = 1.0  # a constant feature: its weight stays at 0 under the penalty
    design = np.hstack([np.ones((len(x), 1)), (x - means) / scales])
    weights = np.zeros(design.shape[1])
    penalty = L2 * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ weights, -35, 35)))
        gradient = design.T @ (p - y) + penalty @ weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return weights.tolist(), means.tolist(), scales.tolist()


def fit_gate(
    items: Sequence[Labeled], keep_accepted: float = 0.95, signal: str = "mean_logprob"
) -> ConfidenceGate:
    """The gate that keeps at least ``keep_accepted`` of the accepted completions in ``items``.

    Only completions with a verdict and a mean log-probability count. InputError when there are too
    few of them, or no accepted or no rejected one (nothing to tell apart).
    """
    if signal not in SIGNALS:
        raise InputError(f"unknown confidence signal {signal!r}; choose one of: {', '.join(SIGNALS)}")
    if not 0 < keep_accepted <= 1:
        raise InputError(f"keep_accepted must be in (0, 1], not {keep_accepted}")
    decided = _decided(items)
    accepted = sum(1 for item in decided if item.accepted)
    if len(decided) < MIN_DECIDED or accepted == 0 or accepted == len(decided):
        raise InputError(
            f"a confidence threshold needs at least {MIN_DECIDED} completions with feedback and a mean "
            f"log-probability, some accepted and some not; the records have {len(decided)} "
            f"({accepted} accepted)"
        )
    gate = ConfidenceGate(signal, -math.inf, keep_accepted)
    if signal == "logistic":
        rows = [
            features(c.prefix, c.suffix, c.text, c.mean_logprob, c.finish_reason)  # type: ignore[arg-type]
            for c in (item.completion for item in decided)
        ]
        gate.weights, gate.means, gate.scales = _fit_logistic(rows, [int(bool(i.accepted)) for i in decided])
    scores = sorted(gate.score(item.completion) for item in decided if item.accepted)  # type: ignore[type-var]
    keep = math.ceil(keep_accepted * len(scores) - 1e-9)
    gate.threshold = float(scores[len(scores) - keep])
    return gate


def gate_report(gate: ConfidenceGate, items: Sequence[Labeled]) -> dict[str, Any]:
    """What the gate would have done to ``items``: suggestions removed, accepted ones lost, rates."""
    decided = _decided(items)
    shown = len(decided)
    accepted = sum(1 for item in decided if item.accepted)
    kept = [item for item in decided if gate.allows(item.completion)]
    kept_accepted = sum(1 for item in kept if item.accepted)
    removed = shown - len(kept)
    lost = accepted - kept_accepted
    return {
        "signal": gate.signal,
        "threshold": round(gate.threshold, 6),
        "suggestions": shown,
        "accepted": accepted,
        "removed": removed,
        "removed_share": round(removed / shown, 4) if shown else 0.0,
        "accepted_lost": lost,
        "accepted_lost_share": round(lost / accepted, 4) if accepted else 0.0,
        "acceptance_rate_before": round(accepted / shown, 4) if shown else None,
        "acceptance_rate_after": round(kept_accepted / len(kept), 4) if kept else None,
    }


def suggest_less(
    records: str | Path,
    keep_accepted: float = 0.95,
    signal: str = "mean_logprob",
    holdout: float = 0.25,
) -> tuple[ConfidenceGate, dict[str, Any]]:
    """Fit a gate on the older records and report it on the newest ``holdout`` share (all when 0).

    The report has the fit's numbers under ``fit`` and, with a holdout, the held-out ones under
    ``held_out``: what it would have removed from suggestions it never saw.
    """
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must be in [0, 1), not {holdout}")
    items = _decided(read_records(records).labeled())  # oldest first
    cut = len(items) - int(len(items) * holdout)
    fit_on, held = items[:cut], items[cut:]
    gate = fit_gate(fit_on, keep_accepted, signal)
    report: dict[str, Any] = {"fit": gate_report(gate, fit_on)}
    if held:
        report["held_out"] = gate_report(gate, held)
    return gate, report


def min_confidence(
    spec: str | float | None, records: str | Path | None = None, keep_accepted: float = 0.95
) -> ConfidenceGate | None:
    """The gate of ``--min-confidence``: None (off), ``auto`` (fitted on ``records``), or a number
    (a fixed floor on the mean token log-probability, e.g. -1.5)."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        if records is None:
            raise InputError("--min-confidence auto needs records to fit on (--record DIR)")
        return suggest_less(records, keep_accepted, "mean_logprob", holdout=0.0)[0]
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise InputError(
            f"--min-confidence must be auto or a mean log-probability (e.g. -1.5), not {spec!r}"
        ) from None
    if not math.isfinite(value) or value > 0:
        raise InputError(f"--min-confidence {spec}: a mean log-probability is a finite number <= 0")
    return ConfidenceGate("mean_logprob", value)
