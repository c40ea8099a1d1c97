"""Where a completion ends: stop strings matched incrementally, client regexes under a deadline.

Stop strings are searched only in the new text plus the overlap a stop could straddle, never in the
whole text again. Client ``truncate_before_pattern`` regexes run in the ``regex`` engine under a
wall-clock deadline (a catastrophic pattern raises instead of freezing the decoding loop), and the
rows of one request share one budget for them: once a row spends it or one search times out, every
row of that request fails at its next search without searching; its neighbours go on.

``regex``'s own timeout counts the CPU time of the searching thread, which on a busy machine is a
fraction of the wall-clock time every other row waits: a search runs in a thread of its own,
without the GIL, and is given up on at its wall-clock deadline (the thread stops by itself within
the same time of CPU).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from codetune.generation.params import compile_pattern

PATTERN_TIMEOUT_S = 0.05
REQUEST_PATTERN_BUDGET_S = 0.5


class PatternTimeout(RuntimeError):
    """A client pattern spent its request's regex budget."""


@dataclass
class PatternBudget:
    """Wall-clock seconds the rows of one request may spend in their patterns, shared."""

    spent: float = 0.0
    failed: str | None = None  # why the request's patterns were given up on


def search_within(pattern: Any, text: str, timeout_s: float) -> Any:
    """``pattern.search(text)``, or TimeoutError once ``timeout_s`` of wall-clock time has passed."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["match"] = pattern.search(text, timeout=timeout_s, concurrent=True)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="codetune-pattern", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive() or isinstance(outcome.get("error"), TimeoutError):
        raise TimeoutError
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("match")


class StopMatcher:
    """One row's stop strings and patterns; ``find`` is called with each new piece of text."""

    def __init__(self, stops: list[str], patterns: list[str], budget: PatternBudget | None = None) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.patterns = [compile_pattern(p) for p in patterns]
        self.budget = budget or PatternBudget()

    @property
    def has_patterns(self) -> bool:
        return bool(self.patterns)

    def find_stop(self, text: str, new_from: int) -> int | None:
        """Earliest stop string in ``text`` that ends at or after ``new_from`` (earlier text had none)."""
        if not self.stops:
            return None
        start = max(0, new_from - self.longest + 1)
        found = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def find_pattern(self, text: str) -> int | None:
        """Start of the earliest pattern match; PatternTimeout once the request's budget is spent."""
        budget = self.budget
        cuts = []
        for pattern in self.patterns:
            left = REQUEST_PATTERN_BUDGET_S - budget.spent
            if budget.failed is None and left <= 0:
                budget.failed = "truncate_before_pattern exceeded its time budget"
            if budget.failed is not None:
                raise PatternTimeout(budget.failed)
            timeout = min(PATTERN_TIMEOUT_S, left)
            begin = time.perf_counter()
            try:
                match = search_within(pattern, text, timeout)
            except TimeoutError:
                budget.failed = f"truncate_before_pattern {pattern.pattern[:40]!r} took over {timeout:g}s"
                raise PatternTimeout(budget.failed) from None
            finally:
                budget.spent += time.perf_counter() - begin
            if match is not None:
                cuts.append(match.start())
        return min(cuts) if cuts else None

    def held_back(self, text: str) -> int:
        """How many trailing characters could still be the start of a stop string."""
        held = 0
        for stop in self.stops:
            tail = text[-(len(stop) - 1) :] if len(stop) > 1 else ""
            position = tail.find(stop[0])
            while position >= 0:
                if stop.startswith(tail[position:]):
                    held = max(held, len(tail) - position)
                    break
                position = tail.find(stop[0], position + 1)
        return held
