"""The one set of decoding settings (``SamplingParams``), its one set of limits, validated once for
every path.

The Python API (``sampling_params``), the stage configs (``params_from``: generate, eval) and every
serving protocol build one of these and ``check`` it; engines trust it. The serving protocols' request
models take their field bounds from the constants here. Bounds exist because one request's settings
must never poison a batch: a temperature or penalty near zero turns logits into inf/NaN, a seed past
2**64 overflows the generator, and thousands of long stop strings or a catastrophic regex would stall
every neighbour. Client patterns compile in one regex engine, ``regex`` (``compile_pattern``), which
can also search under a timeout.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any

MIN_TEMPERATURE = 1e-2  # below this logits/T overflows float16/float32; 0 means greedy
MAX_TEMPERATURE = 2.0  # OpenAI's bound too: above it sampling is noise
MAX_TOP_K = 100_000
MIN_REPETITION_PENALTY = 0.05
MAX_REPETITION_PENALTY = 20.0
MAX_SEED = 2**64 - 1
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_PATTERNS = 8
MAX_PATTERN_CHARS = 256
MAX_N = 64
MAX_LOGPROBS = 20
MAX_PENALTY = 2.0  # presence and frequency penalties lie within [-MAX_PENALTY, MAX_PENALTY]


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
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidParams("top_k", f"must be between 0 and {MAX_TOP_K}")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidParams(
                "repetition_penalty", f"must be between {MIN_REPETITION_PENALTY} and {MAX_REPETITION_PENALTY}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:
                raise InvalidParams(name, f"must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g}")
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
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise InvalidParams("logprobs", f"must be between 0 and {MAX_LOGPROBS}")
        _check_strings("stop", self.stop, MAX_STOPS, MAX_STOP_CHARS)
        _check_strings(
            "truncate_before_pattern", self.truncate_before_pattern, MAX_PATTERNS, MAX_PATTERN_CHARS
        )
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


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """A client pattern compiled in the one regex engine (``regex``: multi-line, searchable under a
    timeout); InvalidParams when it does not compile."""
    import regex

    try:
        return regex.compile(pattern, flags=regex.MULTILINE)
    except (regex.error, OverflowError, RecursionError) as error:
        raise InvalidParams("truncate_before_pattern", f"bad pattern {pattern!r}: {error}") from None


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
    return _checked(SamplingParams(**values), "")


def params_from(config: Any, where: str, **overrides: Any) -> SamplingParams:
    """The decoding settings a stage config names (its fields that are SamplingParams fields: generate's,
    eval's), with ``overrides``; ConfigError ``invalid WHERE options: FIELD: ...`` for one out of range."""
    values = {name: getattr(config, name) for name in PARAM_NAMES if hasattr(config, name)}
    values.update(overrides)
    for name in ("stop", "truncate_before_pattern"):
        if name in values:
            values[name] = list(values[name])
    return _checked(SamplingParams(**values), f"invalid {where} options: ")


def _checked(params: SamplingParams, lead: str) -> SamplingParams:
    from codetune.errors import ConfigError

    try:
        params.check()
    except InvalidParams as error:
        raise ConfigError(f"{lead}{error}") from None
    return params
