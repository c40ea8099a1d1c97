"""The one set of decoding settings (``SamplingParams``), validated once for every path.

The Python API, ``generate``, ``eval`` and every serving route build one of these; engines trust it.
Bounds exist because one request's settings must never poison a batch: a temperature or penalty
near zero turns logits into inf/NaN, a seed past 2**64 overflows the generator, and thousands of
long stop strings or a catastrophic regex would stall every neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

MIN_TEMPERATURE = 1e-2  # below this logits/T overflows float16/float32; 0 means greedy
MAX_TEMPERATURE = 100.0
MIN_REPETITION_PENALTY = 0.05
MAX_REPETITION_PENALTY = 20.0
MAX_SEED = 2**64 - 1
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_PATTERNS = 8
MAX_PATTERN_CHARS = 256
MAX_N = 64


class InvalidParams(ValueError):
    """A setting out of range; the message names the field (HTTP turns it into a 400)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class SamplingParams:
    """Decoding settings shared by the Python API, generate, eval and serve."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_new_tokens: int = 0
    num_beams: int = 1
    n: int = 1
    # Regular expressions (multi-line mode); the text is cut before the earliest match (CodeGen's use case).
    truncate_before_pattern: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0 or bool(self.presence_penalty or self.frequency_penalty)

    def group_key(self) -> tuple:
        """Settings one whole-batch ``model.generate`` call must share (static batches only)."""
        sampling = () if self.greedy else (self.temperature, self.top_p, self.top_k)
        return (
            self.greedy,
            sampling,
            self.repetition_penalty,
            self.min_new_tokens,
            self.num_beams,
            self.num_beams > 1 and self.n,
            self.seed,
            self.presence_penalty,
            self.frequency_penalty,
        )

    def check(self) -> None:
        """Raise InvalidParams naming the first field out of range."""
        for name in ("temperature", "top_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidParams(name, f"must be a finite number, got {value!r}")
        for name in ("max_new_tokens", "min_new_tokens", "top_k", "num_beams", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParams(name, f"must be an integer, got {value!r}")
        if self.max_new_tokens < 0:
            raise InvalidParams("max_new_tokens", "must be >= 0")
        if self.min_new_tokens < 0 or self.min_new_tokens > max(self.max_new_tokens, 0):
            raise InvalidParams("min_new_tokens", "must be between 0 and max_new_tokens")
        if self.temperature < 0 or self.temperature > MAX_TEMPERATURE:
            raise InvalidParams("temperature", f"must be between 0 and {MAX_TEMPERATURE}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise InvalidParams("temperature", f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        if not 0 < self.top_p <= 1:
            raise InvalidParams("top_p", "must be in (0, 1]")
        if self.top_k < 0:
            raise InvalidParams("top_k", "must be >= 0")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidParams(
                "repetition_penalty", f"must be between {MIN_REPETITION_PENALTY} and {MAX_REPETITION_PENALTY}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise InvalidParams(name, "must be between -2 and 2")
        if self.n < 1 or self.n > MAX_N:
            raise InvalidParams("n", f"must be between 1 and {MAX_N}")
        if self.num_beams < 1 or self.num_beams > MAX_N:
            raise InvalidParams("num_beams", f"must be between 1 and {MAX_N}")
        if self.num_beams > 1 and self.n > self.num_beams:
            raise InvalidParams("n", "must not exceed num_beams for beam search")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED
        ):
            raise InvalidParams("seed", f"must be an integer between 0 and {MAX_SEED}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise InvalidParams("logprobs", "must be between 0 and 20")
        _check_strings("stop", self.stop, MAX_STOPS, MAX_STOP_CHARS)
        _check_strings(
            "truncate_before_pattern", self.truncate_before_pattern, MAX_PATTERNS, MAX_PATTERN_CHARS
        )
        from codetune.generation.stops import compile_pattern

        for pattern in self.truncate_before_pattern:
            compile_pattern(pattern)

    def copy_seed(self, copy: int) -> int | None:
        """The seed of the ``copy``-th completion of one request (seed, seed + 1, ...), wrapped to 64 bits."""
        return None if self.seed is None else (self.seed + copy) % (MAX_SEED + 1)


def _check_strings(name: str, values: Any, most: int, longest: int) -> None:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidParams(name, "must be a list of strings")
    if len(values) > most:
        raise InvalidParams(name, f"at most {most} allowed, got {len(values)}")
    if any(len(v) > longest for v in values):
        raise InvalidParams(name, f"each must be at most {longest} characters")


PARAM_NAMES = frozenset(f.name for f in fields(SamplingParams))
# OpenAI's and CodeGen's spellings of the same settings.
ALIASES = {"max_tokens": "max_new_tokens", "max_length": "max_new_tokens", "min_length": "min_new_tokens"}


def sampling_params(**options: Any) -> SamplingParams:
    """SamplingParams from keyword arguments (OpenAI and CodeGen spellings accepted), validated.

    Raises ConfigError for an unknown name or a value out of range.
    """
    from codetune.errors import ConfigError

    decode_strategy = options.pop("decode_strategy", None)
    values = {ALIASES.get(k, k): v for k, v in options.items()}
    unknown = sorted(set(values) - PARAM_NAMES)
    if unknown:
        raise ConfigError(f"unknown generation parameter(s): {', '.join(unknown)}")
    if isinstance(values.get("stop"), str):
        values["stop"] = [values["stop"]]
    if decode_strategy == "greedy_search":
        values["temperature"] = 0.0
    elif decode_strategy == "beam_search":
        values.setdefault("num_beams", 4)
    result = SamplingParams(**values)
    try:
        result.check()
    except InvalidParams as error:
        raise ConfigError(str(error)) from None
    return result
