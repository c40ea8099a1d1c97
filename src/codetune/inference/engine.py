"""Batched generation with the KV cache: length-sorted, token-budgeted batches; greedy, sampling or beam.

One ``model.generate`` call runs a batch. A per-row monitor (a stopping criterion, called once per
decoding step) reads each row's new token, streams its text, and finishes a row on its own stop
sequence, cut pattern, token limit or cancellation, so short rows do not hold up long ones for
stop checks. Batch inference (``generate_file``), the Python API and the server all use it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_BUDGET = 32768


@dataclass
class SamplingParams:
    """Decoding settings shared by eval, generate and serve."""

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

    def group_key(self) -> tuple:
        """Settings one ``model.generate`` call must share; rows with equal keys can be batched."""
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
        """Raise ValueError naming the first field out of range."""
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.min_new_tokens < 0 or self.min_new_tokens > max(self.max_new_tokens, 0):
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.n < 1 or self.num_beams < 1:
            raise ValueError("n and num_beams must be >= 1")
        if self.num_beams > 1 and self.n > self.num_beams:
            raise ValueError("n must not exceed num_beams for beam search")
        for pattern in self.truncate_before_pattern:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"bad truncate_before_pattern {pattern!r}: {error}") from None


@dataclass
class Completion:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None


Cutter = Callable[[str], "int | None"]


@dataclass(eq=False)
class Sequence:
    """One row to generate: prompt ids, settings, optional post-processing and streaming callbacks."""

    prompt_ids: list[int]
    params: SamplingParams
    cutter: Cutter | None = None
    finisher: Callable[[str], str] | None = None
    on_text: Callable[[str], None] | None = None
    on_done: Callable[[Sequence], None] | None = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None
    error: str | None = None
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the engine to stop this row at the next decoding step."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def completion(self) -> Completion:
        return Completion(
            self.text,
            list(self.tokens),
            self.finish_reason or "length",
            len(self.prompt_ids),
            list(self.token_logprobs) if self.params.logprobs is not None else None,
            list(self.top_logprobs) if self.params.logprobs else None,
        )


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _earliest_cut(seq: Sequence, text: str) -> int | None:
    cuts = [i for i in (text.find(s) for s in seq.params.stop if s) if i >= 0]
    for pattern in seq.params.truncate_before_pattern:
        match = re.search(pattern, text, flags=re.MULTILINE)
        if match is not None:
            cuts.append(match.start())
    if seq.cutter is not None:
        found = seq.cutter(text)
        if found is not None:
            cuts.append(found)
    return min(cuts) if cuts else None


def _safe_length(seq: Sequence, text: str) -> int:
    """How much of ``text`` can be streamed without a later cut taking it back."""
    safe = len(text.rstrip("\ufffd"))
    for stop in seq.params.stop:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                safe = min(safe, len(text) - k)
                break
    if seq.cutter is not None or seq.params.truncate_before_pattern:
        # Line-based cuts only land at line starts: hold back the open line and trailing newlines.
        end = text.rfind("\n")
        while end > 0 and text[end - 1] == "\n":
            end -= 1
        safe = min(safe, max(end, 0))
    return safe


def _emit(seq: Sequence, upto: int) -> None:
    if seq.on_text is not None and upto > seq.sent:
        delta = seq.text[seq.sent : upto]
        seq.sent = upto
        try:
            seq.on_text(delta)
        except Exception:  # a broken consumer must not break the batch
            logger.exception("streaming callback failed")
            seq.cancel()


def _finish(seq: Sequence, reason: str) -> None:
    if seq.done:
        return
    if seq.finisher is not None and reason != "cancelled":
        seq.text = seq.finisher(seq.text)
    seq.finish_reason = reason
    _emit(seq, len(seq.text))
    if seq.on_done is not None:
        try:
            seq.on_done(seq)
        except Exception:
            logger.exception("completion callback failed")


def encode(tokenizer: Any, prompt: str | list[int], *, seq2seq: bool = False) -> list[int]:
    """Token ids of a prompt (ids pass through); a seq2seq encoder input gets its special tokens."""
    if isinstance(prompt, list):
        return list(prompt)
    return tokenizer(prompt, add_special_tokens=seq2seq)["input_ids"]


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


def plan_batches(
    lengths: list[int], max_new_tokens: list[int], *, batch_size: int, token_budget: int | None
) -> list[list[int]]:
    """Index batches, longest prompts first, each within ``batch_size`` rows and ``token_budget`` tokens.

    A batch costs rows x (longest prompt + longest completion) because rows are padded to the
    longest; sorting by length keeps that padding small, and the budget lets short prompts run in
    wide batches and long ones in narrow batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        cost = max(width, lengths[i] + max_new_tokens[i])
        full = len(current) >= batch_size or (
            token_budget is not None and current and cost * (len(current) + 1) > token_budget
        )
        if full:
            batches.append(current)
            current, cost = [], lengths[i] + max_new_tokens[i]
        current.append(i)
        width = cost
    if current:
        batches.append(current)
    return batches


class _Recorder:
    """Logits processor that keeps the last step's log-probabilities (for ``logprobs``)."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.last = scores.float().log_softmax(-1)
        return scores


class _Penalties:
    """OpenAI's presence and frequency penalties over the tokens generated so far."""

    def __init__(self, start: int, presence: float, frequency: float) -> None:
        self.start, self.presence, self.frequency = start, presence, frequency

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.start :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class _Monitor:
    """Stopping criterion that follows every row: tokens, text, streaming and per-row stops."""

    def __init__(self, seqs: list[Sequence], tokenizer: Any, start: int, stop_ids: set[int], recorder: Any):
        self.seqs, self.tokenizer, self.start, self.stop_ids = seqs, tokenizer, start, stop_ids
        self.recorder = recorder

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, seq in enumerate(self.seqs):
            logp = (
                self.recorder.last[row]
                if self.recorder is not None and self.recorder.last is not None
                else None
            )
            done[row] = advance(seq, last[row], self.tokenizer, self.stop_ids, logp)
        return done


def advance(seq: Sequence, token: int, tokenizer: Any, stop_ids: set[int], logp: Any = None) -> bool:
    """Take one new token for a row: record, stream, and finish it on a stop; True when it is done."""
    if seq.done:
        return True
    if seq.cancelled:
        _finish(seq, "cancelled")
        return True
    if token in stop_ids:
        _finish(seq, "stop")
        return True
    seq.tokens.append(token)
    if seq.params.logprobs is not None and logp is not None:
        seq.token_logprobs.append(float(logp[token]))
        if seq.params.logprobs:
            values, ids = logp.topk(seq.params.logprobs)
            seq.top_logprobs.append(
                {tokenizer.decode([i]): float(v) for v, i in zip(values.tolist(), ids.tolist())}
            )
    text = tokenizer.decode(seq.tokens, skip_special_tokens=True)
    cut = _earliest_cut(seq, text)
    if cut is not None:
        seq.text = text[:cut]
        _finish(seq, "stop")
        return True
    seq.text = text
    if len(seq.tokens) >= seq.params.max_new_tokens:
        _finish(seq, "length")
        return True
    _emit(seq, _safe_length(seq, text))
    return False


def _stop_token_ids(tokenizer: Any) -> set[int]:
    """EOS plus the family's end-of-infill token (CodeLlama's ▁<EOT>); cached on the tokenizer."""
    cached = getattr(tokenizer, "_codetune_stop_ids", None)
    if cached is not None:
        return cached
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    from codetune.modeling.special_tokens import fim_tokens

    fim = fim_tokens(tokenizer)
    if fim is not None and fim.eot:
        eot = tokenizer.convert_tokens_to_ids(fim.eot)
        if isinstance(eot, int) and eot != tokenizer.unk_token_id:
            ids.add(eot)
    with contextlib.suppress(AttributeError):
        tokenizer._codetune_stop_ids = ids
    return ids


def run_batch(model: Any, tokenizer: Any, seqs: list[Sequence]) -> None:
    """Generate every row of ``seqs`` (which share ``group_key``) in one ``model.generate`` call."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    live = [s for s in seqs if not s.done]
    for seq in live:
        if seq.cancelled:
            _finish(seq, "cancelled")
        elif seq.params.max_new_tokens == 0:
            _finish(seq, "length")
    live = [s for s in live if not s.done]
    if not live:
        return
    params = live[0].params
    if params.num_beams > 1:
        _run_beams(model, tokenizer, live)
        return
    if params.seed is not None:
        torch.manual_seed(params.seed)
    device = next(model.parameters()).device
    seq2seq = is_seq2seq(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask, width = _pad([s.prompt_ids or [tokenizer.eos_token_id] for s in live], pad_id, device, seq2seq)
    start = 1 if seq2seq else width
    recorder = _Recorder() if any(s.params.logprobs is not None for s in live) else None
    processors = LogitsProcessorList()
    if params.presence_penalty or params.frequency_penalty:
        processors.append(_Penalties(start, params.presence_penalty, params.frequency_penalty))
    if recorder is not None:
        processors.append(recorder)
    monitor = _Monitor(live, tokenizer, start, _stop_token_ids(tokenizer), recorder)
    kwargs = _generate_kwargs(params, max(s.params.max_new_tokens for s in live), pad_id, tokenizer)
    with torch.inference_mode():
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([monitor]),
            **kwargs,
        )
    for seq in live:
        _finish(seq, "length")


def _pad(rows: list[list[int]], pad_id: int, device: Any, seq2seq: bool) -> tuple[Any, Any, int]:
    import torch

    width = max(len(r) for r in rows)
    if seq2seq:
        # The encoder sees the whole input at once: right padding is what it was trained with.
        ids = [r + [pad_id] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    else:
        # Left padding so that every row's next token sits at the same position.
        ids = [[pad_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device), width


def _generate_kwargs(params: SamplingParams, max_new: int, pad_id: int, tokenizer: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new,
        "min_new_tokens": params.min_new_tokens or None,
        "do_sample": not params.greedy,
        "pad_token_id": pad_id,
        "eos_token_id": sorted(_stop_token_ids(tokenizer)) or None,
        "repetition_penalty": params.repetition_penalty,
        "num_beams": params.num_beams,
    }
    if not params.greedy:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return {k: v for k, v in kwargs.items() if v is not None or k in ("temperature", "top_p", "top_k")}


def _run_beams(model: Any, tokenizer: Any, seqs: list[Sequence]) -> None:
    """Beam search: ``n`` best beams per prompt; stops and cuts apply to the finished text."""
    import torch

    params = seqs[0].params
    device = next(model.parameters()).device
    seq2seq = is_seq2seq(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask, width = _pad([s.prompt_ids or [tokenizer.eos_token_id] for s in seqs], pad_id, device, seq2seq)
    kwargs = _generate_kwargs(params, max(s.params.max_new_tokens for s in seqs), pad_id, tokenizer)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=params.n, **kwargs)
    new = out[:, 1:] if seq2seq else out[:, width:]
    stop_ids = _stop_token_ids(tokenizer)
    for row, seq in enumerate(seqs):
        beams = []
        for b in range(params.n):
            tokens = []
            for token in new[row * params.n + b].tolist():
                if token in stop_ids or token == pad_id:
                    break
                tokens.append(token)
            beams.append(tokens)
        seq.beams = []  # type: ignore[attr-defined]
        for tokens in beams:
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            cut = _earliest_cut(seq, text)
            reason = "stop" if cut is not None or len(tokens) < seq.params.max_new_tokens else "length"
            text = text[:cut] if cut is not None else text
            if seq.finisher is not None:
                text = seq.finisher(text)
            seq.beams.append(Completion(text, tokens, reason, len(seq.prompt_ids)))  # type: ignore[attr-defined]
        first = seq.beams[0]  # type: ignore[attr-defined]
        seq.tokens, seq.text = first.token_ids, first.text
        _finish(seq, first.finish_reason)


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str | list[int]],
    params: SamplingParams | list[SamplingParams] | None = None,
    *,
    batch_size: int = 32,
    token_budget: int | None = DEFAULT_TOKEN_BUDGET,
    cutters: list[Cutter | None] | None = None,
    finishers: list[Callable[[str], str] | None] | None = None,
) -> Iterator[tuple[int, list[Completion]]]:
    """Yield ``(prompt index, its n completions)`` as batches finish (longest prompts first)."""
    if params is None or isinstance(params, SamplingParams):
        params = [params or SamplingParams()] * len(prompts)
    for p in {id(p): p for p in params}.values():
        p.check()
    encoded = [encode(tokenizer, p, seq2seq=is_seq2seq(model)) for p in prompts]
    seqs: list[tuple[int, Sequence]] = []
    for i, (ids, p) in enumerate(zip(encoded, params)):
        copies = 1 if p.num_beams > 1 else p.n
        for _ in range(copies):
            seq = Sequence(
                ids, p, (cutters or [None] * len(prompts))[i], (finishers or [None] * len(prompts))[i]
            )
            seqs.append((i, seq))
    groups: dict[tuple, list[int]] = {}
    for k, (_, seq) in enumerate(seqs):
        groups.setdefault(seq.params.group_key(), []).append(k)
    remaining = {i: (1 if p.num_beams > 1 else p.n) for i, p in enumerate(params)}
    results: dict[int, list[Sequence]] = {}
    for members in groups.values():
        lengths = [len(seqs[k][1].prompt_ids) for k in members]
        budget_rows = [seqs[k][1].params.max_new_tokens for k in members]
        beams = seqs[members[0]][1].params.num_beams
        budget = token_budget // beams if token_budget else None
        for batch in plan_batches(lengths, budget_rows, batch_size=batch_size, token_budget=budget):
            chosen = [seqs[members[b]] for b in batch]
            run_batch(model, tokenizer, [s for _, s in chosen])
            for i, seq in chosen:
                results.setdefault(i, []).append(seq)
                remaining[i] -= 1
                if remaining[i] == 0:
                    done = results.pop(i)
                    if hasattr(done[0], "beams"):
                        yield i, list(done[0].beams)
                    else:
                        yield i, [s.completion() for s in done]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    params: SamplingParams | None = None,
    *,
    batch_size: int = 8,
    token_budget: int | None = None,
) -> list[str]:
    """Complete each prompt; returns the first completion's new text only, in the prompts' order."""
    outputs: list[str] = [""] * len(prompts)
    for i, completions in generate_completions(
        model, tokenizer, list(prompts), params, batch_size=batch_size, token_budget=token_budget
    ):
        outputs[i] = completions[0].text
    return outputs
