"""One row being generated, and how it takes each new token: the same for every engine.

``advance`` records a token, extends the text by incremental detokenization (a few tokens decoded per
step, never the whole output again), finds stop strings in the new text only, applies the request's
cut (post-processing, client patterns) when a line completes, streams what no later cut can take
back, and finishes the row on EOS, a stop, a cut or its token limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codetune.fim import decode_continuation
from codetune.generation.params import SamplingParams
from codetune.generation.stops import PatternBudget, StopMatcher

logger = logging.getLogger(__name__)

Cutter = Callable[[str], "int | None"]


@dataclass
class Completion:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop", "length", "cancelled" or "error"
    prompt_tokens: int
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None


class Detokenizer:
    """Incremental decoding: each step decodes only the tokens since the last complete character."""

    def __init__(self) -> None:
        self.prefix_offset = 0
        self.read_offset = 0

    def step(self, tokenizer: Any, tokens: list[int], *, final: bool = False) -> str:
        """The new text the latest tokens add ('' while they end inside a multi-byte character)."""
        if self.read_offset >= len(tokens):
            return ""
        if self.prefix_offset == 0:  # the first window: its first token's leading space counts
            prefix = decode_continuation(tokenizer, tokens[: self.read_offset])
            full = decode_continuation(tokenizer, tokens)
        else:
            prefix = tokenizer.decode(tokens[self.prefix_offset : self.read_offset], skip_special_tokens=True)
            full = tokenizer.decode(tokens[self.prefix_offset :], skip_special_tokens=True)
        # a character is at most 4 bytes, so 4 pending tokens that still end inside one are invalid
        # bytes (a tiny or broken model): emit them as they are instead of widening the window forever
        pending = len(tokens) - self.read_offset
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd") or pending >= 4):
            self.prefix_offset, self.read_offset = self.read_offset, len(tokens)
            return full[len(prefix) :]
        return ""


def token_ends(tokenizer: Any, tokens: list[int]) -> list[int]:
    """Where each token's text ends in the text that decoding ``tokens`` one by one builds, as a row's
    text is built (a token ending inside a character ends before it: a cut never splits one)."""
    detok, ends, length = Detokenizer(), [], 0
    for count in range(1, len(tokens) + 1):
        length += len(detok.step(tokenizer, tokens[:count], final=count == len(tokens)))
        ends.append(length)
    return ends


@dataclass(eq=False)
class Sequence:
    """One row to generate: prompt ids, settings, optional post-processing and streaming callbacks."""

    prompt_ids: list[int]
    params: SamplingParams
    cutter: Cutter | None = None
    finisher: Callable[[str], str] | None = None
    on_text: Callable[[str], None] | None = None
    on_done: Callable[[Sequence], None] | None = None
    copy: int = 0  # which of the request's n completions (its seed is seed + copy)
    prefix_cache: bool = True  # may reuse and store prompt KV (llama.cpp's cache_prompt: false says no)
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None
    error: str | None = None
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    beams: list[Completion] | None = None
    adapter: str | None = None  # the peft adapter this row runs with ("__base__": none; None: as loaded)
    pattern_budget: PatternBudget | None = None  # shared by the rows of one request
    # Keep each chosen token's log-probability though the client asked for none (serve's records and
    # confidence gate read ``mean_logprob``); what the client gets still follows ``params.logprobs``.
    keep_logprobs: bool = False
    _cancel: threading.Event = field(default_factory=threading.Event)
    _detok: Detokenizer = field(default_factory=Detokenizer)
    _matcher: StopMatcher | None = None
    _line_started: bool = False

    def cancel(self) -> None:
        """Ask the engine to stop this row at the next decoding step."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def matcher(self) -> StopMatcher:
        if self._matcher is None:
            self._matcher = StopMatcher(
                self.params.stop, self.params.truncate_before_pattern, self.pattern_budget
            )
        return self._matcher

    @property
    def line_cuts(self) -> bool:
        """Cuts that only land at line starts apply to this row (post-processing or client patterns)."""
        return self.cutter is not None or self.matcher.has_patterns

    @property
    def mean_logprob(self) -> float | None:
        """The mean log-probability of the generated tokens (None when none were kept)."""
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)

    def completion(self) -> Completion:
        return Completion(
            self.text,
            list(self.tokens),
            self.finish_reason or "length",
            len(self.prompt_ids),
            list(self.token_logprobs) if self.params.logprobs is not None else None,
            list(self.top_logprobs) if self.params.logprobs else None,
        )

    def completions(self) -> list[Completion]:
        """Beam search's n beams, else this row's one completion."""
        return list(self.beams) if self.beams is not None else [self.completion()]


def line_cut(seq: Sequence, text: str) -> int | None:
    """Earliest cut of the row's post-processor and client patterns in ``text``."""
    cuts = []
    if seq.matcher.has_patterns:
        found = seq.matcher.find_pattern(text)
        if found is not None:
            cuts.append(found)
    if seq.cutter is not None:
        found = seq.cutter(text)
        if found is not None:
            cuts.append(found)
    return min(cuts) if cuts else None


def final_text(seq: Sequence, text: str) -> tuple[str, bool]:
    """Apply every cut to a whole text (beam search, vLLM); returns (text, whether one cut it)."""
    cut = seq.matcher.find_stop(text, 0)
    found = line_cut(seq, text)
    cuts = [c for c in (cut, found) if c is not None]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _safe_length(seq: Sequence, text: str) -> int:
    """How much of ``text`` can be streamed without a later cut taking it back."""
    safe = len(text.rstrip("\ufffd")) - seq.matcher.held_back(text)
    if seq.line_cuts:
        # Line-based cuts only land at line starts: hold back the open line and trailing newlines.
        end = text.rfind("\n")
        while end > 0 and text[end - 1] == "\n":
            end -= 1
        safe = min(safe, max(end, 0))
    return safe


def emit(seq: Sequence, upto: int) -> None:
    if seq.on_text is not None and upto > seq.sent:
        delta = seq.text[seq.sent : upto]
        seq.sent = upto
        try:
            seq.on_text(delta)
        except Exception:  # a broken consumer must not break the batch
            logger.exception("streaming callback failed")
            seq.cancel()


def finish(seq: Sequence, reason: str) -> None:
    """End a row: final post-processing, the rest of its stream, its completion callback."""
    if seq.done:
        return
    if seq.finisher is not None and reason not in ("cancelled", "error"):
        seq.text = seq.finisher(seq.text)
    seq.finish_reason = reason
    if reason != "error":
        emit(seq, len(seq.text))
    _notify(seq)


def fail(seq: Sequence, error: BaseException) -> None:
    """End one row with an error; the others in its batch are not touched."""
    if seq.done:
        return
    seq.error = f"{type(error).__name__}: {error}"
    finish(seq, "error")


def _notify(seq: Sequence) -> None:
    if seq.on_done is not None:
        try:
            seq.on_done(seq)
        except Exception:
            logger.exception("completion callback failed")


def _end(seq: Sequence, tokenizer: Any, reason: str) -> None:
    """Finish on EOS or the token limit: the undecoded tail joins the text, then the line cuts."""
    seq.text += seq._detok.step(tokenizer, seq.tokens, final=True)
    cut = line_cut(seq, seq.text) if seq.line_cuts else None
    if cut is not None:
        seq.text, reason = seq.text[:cut], "stop"
    finish(seq, reason)


def advance(seq: Sequence, token: int, tokenizer: Any, stop_ids: set[int], logp: Any = None) -> bool:
    """Take one new token for a row: record, stream, and finish it on a stop; True when it is done."""
    if seq.done:
        return True
    if seq.cancelled:
        finish(seq, "cancelled")
        return True
    if token in stop_ids:
        _end(seq, tokenizer, "stop")
        return True
    seq.tokens.append(token)
    if logp is not None and (seq.params.logprobs is not None or seq.keep_logprobs):
        seq.token_logprobs.append(float(logp[token]))
        if seq.params.logprobs:
            values, ids = logp.topk(seq.params.logprobs)
            seq.top_logprobs.append(
                {tokenizer.decode([i]): float(v) for v, i in zip(values.tolist(), ids.tolist())}
            )
    delta = seq._detok.step(tokenizer, seq.tokens)
    if delta:
        before = len(seq.text)
        seq.text += delta
        cuts = [seq.matcher.find_stop(seq.text, before)]
        # Line cuts change only when a line ends or a new line gets its first character.
        started = bool(seq.text[seq.text.rfind("\n") + 1 :].strip())
        if seq.line_cuts and ("\n" in delta or (started and not seq._line_started)):
            cuts.append(line_cut(seq, seq.text))
        seq._line_started = started
        found = [c for c in cuts if c is not None]
        if found:
            seq.text = seq.text[: min(found)]
            finish(seq, "stop")
            return True
    if len(seq.tokens) >= seq.params.max_new_tokens:
        _end(seq, tokenizer, "length")
        return True
    emit(seq, _safe_length(seq, seq.text))
    return False


def stop_token_ids(tokenizer: Any) -> set[int]:
    """EOS plus, for a FIM family, its end-of-middle token and sentinels (``FimFormat.stop_ids``)."""
    from codetune.fim import FimFormat

    fim = FimFormat.from_tokenizer(tokenizer)
    if fim is not None:
        return set(fim.stop_ids)
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def is_seq2seq(model: Any) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def context_length(model: Any) -> int | None:
    """The model's maximum number of positions, when its config says."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
