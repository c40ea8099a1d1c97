"""Show the part of a suggestion the model is sure of: a cut before its first unsure token.

A suggestion is usually right for a few tokens and then guesses; the developer rejects it whole,
and the right start is lost with the wrong end. ``serve --cut-below X`` answers each suggestion up to
(not including) its first token whose log-probability is under ``X``. ``auto`` fits ``X`` on the
records (``serve --record``): for each recorded suggestion whose truth is known (what the developer
went on to type on that line, or the part they accepted), the floor under which the recorded
suggestions, cut there, would have had the most characters accepted (ties: the higher acceptance
rate). Acceptance is the replay's proxy (``codetune.evaluate.metrics.accepts``).

Records made behind a cut hold the cut text: fit on records of a server without one, or a refit can
only cut shorter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.artifacts.records import CompletionRecord, Labeled, read_records, typed_after
from codetune.errors import InputError

# Fewer suggestions with a known truth than this cannot place a floor with any meaning.
MIN_JUDGED = 20


@dataclass
class SuggestionCut:
    """Answer each suggestion up to its first token whose log-probability is under ``floor``."""

    floor: float

    def kept(self, token_logprobs: Sequence[float]) -> int:
        """How many tokens come before the first one under the floor."""
        return next(
            (i for i, logprob in enumerate(token_logprobs) if logprob < self.floor), len(token_logprobs)
        )

    def apply(
        self, text: str, token_logprobs: Sequence[float] | None, token_ends: Sequence[int] | None
    ) -> str:
        """``text`` cut before its first token under the floor (whole without a token trace)."""
        if not token_logprobs or not token_ends or len(token_logprobs) != len(token_ends):
            return text
        return _first_tokens(text, token_ends, self.kept(token_logprobs))

    def applied(self, record: CompletionRecord) -> str:
        return self.apply(record.text, record.token_logprobs, record.token_ends)

    def cut_record(self, record: CompletionRecord) -> None:
        """Cut a served suggestion's record in place: its text and the trace of the tokens it keeps."""
        if record.token_logprobs and record.token_ends:
            kept = self.kept(record.token_logprobs)
            record.text = _first_tokens(record.text, record.token_ends, kept)
            record.token_logprobs, record.token_ends = record.token_logprobs[:kept], record.token_ends[:kept]


def _first_tokens(text: str, token_ends: Sequence[int], kept: int) -> str:
    """The text of the first ``kept`` tokens (all of it when every traced token is kept)."""
    if kept >= len(token_ends):
        return text
    return text[: token_ends[kept - 1]] if kept else ""


def _shown_line(text: str) -> str:
    return text.split("\n", 1)[0].rstrip()


def _judged(items: Sequence[Labeled]) -> list[tuple[CompletionRecord, str]]:
    """Suggestions with a token trace and a known truth: the line typed after them, or for an accepted
    one with none, the part kept."""
    typed = typed_after(list(items))
    judged = []
    for index, item in enumerate(items):
        completion = item.completion
        if not completion.token_logprobs or completion.withheld or item.accepted is None:
            continue
        truth = typed.get(index)
        if truth is None and item.accepted:
            truth = item.target
        if truth is not None:
            judged.append((completion, truth))
    return judged


def _outcome(text: str, truth: str) -> tuple[int, int, int]:
    """(shown, accepted, accepted characters) of one suggestion's text against its truth."""
    line = _shown_line(text)
    if not line.strip():
        return 0, 0, 0
    accepted = truth.split("\n", 1)[0].startswith(line)
    return 1, int(accepted), len(line) if accepted else 0


def _score(cut: SuggestionCut | None, judged: list[tuple[CompletionRecord, str]]) -> dict[str, Any]:
    outcomes = [_outcome(cut.applied(c) if cut else c.text, truth) for c, truth in judged]
    shown, accepted, chars = (
        (sum(column) for column in zip(*outcomes, strict=True)) if outcomes else (0, 0, 0)
    )
    return {
        "shown": shown,
        "accepted": accepted,
        "accepted_chars": chars,
        "acceptance_rate": round(accepted / shown, 4) if shown else None,
    }


def _steps(completion: CompletionRecord, truth: str) -> list[tuple[float, tuple[int, int, int]]]:
    """How one suggestion's outcome changes as the floor comes down: for a floor above its first
    token it is cut to nothing; at each new low of its log-probabilities (a floor just at or under
    it) the cut moves past that token, to the next lower one, or to the whole text after the last."""
    logprobs, ends, text = completion.token_logprobs or [], completion.token_ends or [], completion.text
    lows = [0]
    for index, logprob in enumerate(logprobs):
        if logprob < logprobs[lows[-1]]:
            lows.append(index)
    steps = []
    for position, index in enumerate(lows):
        kept = lows[position + 1] if position + 1 < len(lows) else len(ends)
        steps.append((logprobs[index], _outcome(_first_tokens(text, ends, kept), truth)))
    return steps


def fit_cut(items: Sequence[Labeled]) -> tuple[SuggestionCut | None, dict[str, Any]]:
    """The floor that would have had the most characters of ``items`` accepted (None: no floor beats
    the suggestions whole), and what it changes (``before``: whole, ``after``: cut). InputError when
    too few suggestions have a token trace and a known truth.

    One sweep down the floors: each suggestion's outcome only changes at the new lows of its
    log-probabilities, so every floor that can matter is scored once, in time linear in the tokens.
    """
    judged = _judged(items)
    if len(judged) < MIN_JUDGED:
        raise InputError(
            f"--cut-below auto needs at least {MIN_JUDGED} recorded suggestions with token log-probabilities "
            f"and a known truth (feedback, or the line typed after them); the records have {len(judged)}: "
            "record with this version of serve first, or give a number (e.g. --cut-below -2)"
        )
    before = _score(None, judged)
    events = sorted(
        (
            (floor, item, outcome)
            for item, (c, truth) in enumerate(judged)
            for floor, outcome in _steps(c, truth)
        ),
        key=lambda event: -event[0],
    )
    state = [(0, 0, 0)] * len(judged)  # every suggestion cut to nothing: a floor above all tokens
    shown = accepted = chars = 0
    whole_rate = before["accepted"] / before["shown"] if before["shown"] else 0.0
    best_key, best_floor = (before["accepted_chars"], whole_rate), None
    for position, (floor, item, outcome) in enumerate(events):
        old = state[item]
        shown, accepted, chars = (
            shown + outcome[0] - old[0],
            accepted + outcome[1] - old[1],
            chars + outcome[2] - old[2],
        )
        state[item] = outcome
        if position + 1 < len(events) and events[position + 1][0] == floor:
            continue  # score a floor once every suggestion it moves has moved
        key = (chars, accepted / shown if shown else 0.0)
        if key > best_key:
            best_key, best_floor = key, floor
    cut = SuggestionCut(best_floor) if best_floor is not None else None
    report = {"floor": best_floor, "judged": len(judged), "before": before, "after": _score(cut, judged)}
    return cut, report


def cut_on_records(records: str | Path, holdout: float = 0.25) -> tuple[SuggestionCut | None, dict[str, Any]]:
    """Fit the cut on the older records and report it on the newest ``holdout`` share (all when 0):
    ``fit`` (what it changes on the records it was fitted on) and ``held_out`` (on ones it never saw)."""
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must be in [0, 1), not {holdout}")
    items = read_records(records).labeled()  # oldest first
    split = len(items) - int(len(items) * holdout)
    cut, fitted = fit_cut(items[:split])
    report: dict[str, Any] = {"fit": fitted}
    if split < len(items):
        held = _judged(items[split:])
        report["held_out"] = {"judged": len(held), "before": _score(None, held), "after": _score(cut, held)}
    return cut, report


def cut_below(spec: str | float | None) -> SuggestionCut | None:
    """The cut of ``--cut-below``: None (off) or a fixed floor (a log-probability <= 0; ``auto`` is
    fitted by the caller, who has the records)."""
    if spec is None or spec == "":
        return None
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise InputError(f"--cut-below must be auto or a log-probability (e.g. -2), not {spec!r}") from None
    if not math.isfinite(value) or value > 0:
        raise InputError(f"--cut-below {spec}: a token log-probability is a finite number <= 0")
    return SuggestionCut(value)
