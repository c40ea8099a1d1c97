"""Where a completion ends: stop strings matched incrementally, client regexes under a deadline.

Stop strings are searched only in the new text plus the overlap a stop could straddle, never in the
whole text again. Client ``truncate_before_pattern`` regexes run in the ``regex`` engine with a
timeout (a catastrophic pattern raises instead of freezing the decoding loop), and each row has a
total budget for them: a row that spends it fails alone, its neighbours go on.
"""

from __future__ import annotations

import time

from codetune.generation.params import compile_pattern

PATTERN_TIMEOUT_S = 0.05
ROW_PATTERN_BUDGET_S = 0.5


class PatternTimeout(RuntimeError):
    """A client pattern spent its row's regex budget."""


class StopMatcher:
    """One row's stop strings and patterns; ``find`` is called with each new piece of text."""

    def __init__(self, stops: list[str], patterns: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.patterns = [compile_pattern(p) for p in patterns]
        self.spent = 0.0

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
        """Start of the earliest pattern match; PatternTimeout once the row's budget is spent."""
        cuts = []
        for pattern in self.patterns:
            left = ROW_PATTERN_BUDGET_S - self.spent
            if left <= 0:
                raise PatternTimeout("truncate_before_pattern exceeded its time budget")
            begin = time.perf_counter()
            try:
                match = pattern.search(text, timeout=min(PATTERN_TIMEOUT_S, left))
            except TimeoutError:
                raise PatternTimeout(
                    f"truncate_before_pattern {pattern.pattern[:40]!r} took over {PATTERN_TIMEOUT_S}s"
                ) from None
            finally:
                self.spent += time.perf_counter() - begin
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
