"""Static batches of ``model.generate``: seq2seq models and beam search.

Rows that share ``group_key`` run in one ``generate`` call, length-sorted within a token budget.
The token of each row is chosen by the shared sampler (``RowSampler``) and a per-row monitor (a
stopping criterion) takes it: it streams the row's text and finishes the row on its own stop, cut,
token limit or cancellation. As a server the engine micro-batches: it waits a few milliseconds for
company, then runs what shares the first queued row's settings.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from codetune.fim import decode_continuation
from codetune.generation.engines.base import Engine, adapter_kwargs
from codetune.generation.sampler import RowSampler, make_generator
from codetune.generation.sequence import (
    Completion,
    Sequence,
    advance,
    fail,
    final_text,
    finish,
    is_seq2seq,
    stop_token_ids,
)
from codetune.threads import follow_load

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_BUDGET = 32768


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


class _Monitor:
    """Stopping criterion that follows every row: tokens, text, streaming and per-row stops."""

    def __init__(self, seqs: list[Sequence], tokenizer: Any, stop_ids: set[int], sampler: RowSampler):
        self.seqs, self.tokenizer, self.stop_ids, self.sampler = seqs, tokenizer, stop_ids, sampler

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, seq in enumerate(self.seqs):
            logp = self.sampler.logps[row] if row < len(self.sampler.logps) else None
            try:
                done[row] = advance(seq, last[row], self.tokenizer, self.stop_ids, logp)
            except Exception as error:  # this row fails, the batch goes on
                fail(seq, error)
                done[row] = True
        return done


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


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def run_batch(model: Any, tokenizer: Any, seqs: list[Sequence]) -> None:
    """Generate every row of ``seqs`` (which share ``group_key``) in one ``model.generate`` call."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    for seq in seqs:
        if seq.cancelled:
            finish(seq, "cancelled")
        elif seq.params.max_new_tokens == 0 and not seq.done:
            finish(seq, "length")
    live = [s for s in seqs if not s.done]
    if not live:
        return
    params = live[0].params
    device = next(model.parameters()).device
    seq2seq = is_seq2seq(model)
    pad_id = _pad_id(tokenizer)
    ids, mask, width = _pad([s.prompt_ids or [tokenizer.eos_token_id] for s in live], pad_id, device, seq2seq)
    stop_ids = stop_token_ids(tokenizer)
    beams = params.num_beams
    generators = [make_generator(s.params, s.copy, device) for s in live]
    sampler = RowSampler(live, generators, stop_ids, beams, seq2seq)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(s.params.max_new_tokens for s in live),
        "do_sample": False,  # the sampler has chosen each row's token already
        "pad_token_id": pad_id,
        "eos_token_id": sorted(stop_ids) or None,
        "num_beams": beams,
        "repetition_penalty": 1.0,  # penalties are the sampler's; a hub generation_config must not add its own
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "logits_processor": LogitsProcessorList([sampler]),
        **adapter_kwargs(live),
    }
    with torch.inference_mode():
        if beams > 1:
            out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=params.n, **kwargs)
            _take_beams(tokenizer, live, out[:, 1:] if seq2seq else out[:, width:], stop_ids, pad_id)
            return
        monitor = _Monitor(live, tokenizer, stop_ids, sampler)
        model.generate(
            input_ids=ids, attention_mask=mask, stopping_criteria=StoppingCriteriaList([monitor]), **kwargs
        )
    for seq in live:
        if not seq.done:
            finish(seq, "length")


def _take_beams(tokenizer: Any, seqs: list[Sequence], new: Any, stop_ids: set[int], pad_id: int) -> None:
    """The ``n`` best beams per prompt; stops and cuts apply to each finished text."""
    n = seqs[0].params.n
    for row, seq in enumerate(seqs):
        seq.beams = []
        for b in range(n):
            tokens = []
            for token in new[row * n + b].tolist():
                if token in stop_ids or token == pad_id:
                    break
                tokens.append(token)
            text, cut = final_text(seq, decode_continuation(tokenizer, tokens))
            reason = "stop" if cut or len(tokens) < seq.params.max_new_tokens else "length"
            if seq.finisher is not None:
                text = seq.finisher(text)
            seq.beams.append(Completion(text, tokens, reason, len(seq.prompt_ids)))
        first = seq.beams[0]
        seq.tokens, seq.text = first.token_ids, first.text
        seq.finisher = None  # already applied per beam
        finish(seq, first.finish_reason)


class StaticEngine(Engine):
    """Whole-batch ``model.generate``; micro-batches concurrent requests when serving."""

    name = "static"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        wait_s: float = 0.005,
        regroup_s: float = 0.02,
        token_budget: int | None = DEFAULT_TOKEN_BUDGET,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.wait_s, self.regroup_s, self.token_budget = wait_s, regroup_s, token_budget
        self._expected = 1

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        groups: dict[tuple, list[Sequence]] = {}
        for seq in seqs:
            groups.setdefault(seq.params.group_key(), []).append(seq)
        for members in groups.values():
            beams = members[0].params.num_beams
            budget = self.token_budget // beams if self.token_budget else None
            plan = plan_batches(
                [len(s.prompt_ids) for s in members],
                [s.params.max_new_tokens for s in members],
                batch_size=self.max_batch_size,
                token_budget=budget,
            )
            for batch in plan:
                chosen = [members[i] for i in batch]
                self._run(chosen)
                yield from chosen

    def _run(self, batch: list[Sequence]) -> None:
        follow_load()  # torch's threads follow the free cores, in whichever thread decodes
        try:
            run_batch(self.model, self.tokenizer, batch)
        except Exception as error:  # the server never dies on a request
            logger.exception("batch failed")
            self._fail(batch, error)
        with self._cond:
            self.batches += 1
            self.sequences += len(batch)
            self.tokens += sum(len(seq.tokens) for seq in batch)

    def _take(self) -> list[Sequence]:
        with self._cond:
            while not self._pending and not self._chores and not self._stopping:
                self._cond.wait(timeout=0.5)
            if self._stopping or not self._pending:
                return []
            # Clients of the last batch come back at slightly different times: wait a little longer for
            # them and those queued meanwhile, so that they do not split into small alternating batches.
            target = min(self.max_batch_size, max(self._expected, 1))
            begin = time.monotonic()
            while len(self._pending) < self.max_batch_size and not self._stopping:
                waited = time.monotonic() - begin
                if waited >= self.wait_s + self.regroup_s or (
                    waited >= self.wait_s and len(self._pending) >= target
                ):
                    break
                limit = self.wait_s if len(self._pending) >= target else self.wait_s + self.regroup_s
                self._cond.wait(timeout=max(limit - waited, 0.0005))
            key = self._pending[0].params.group_key()
            batch, rest = [], deque()
            while self._pending:
                seq = self._pending.popleft()
                if len(batch) < self.max_batch_size and seq.params.group_key() == key:
                    batch.append(seq)
                else:
                    rest.append(seq)
            self._pending = rest
            return batch

    def _worker(self) -> None:
        while True:
            self._run_chores()
            batch = self._take()
            if not batch:
                if self._stopping:
                    return
                continue
            self._run(batch)
            with self._cond:
                # Closed-loop clients of this batch come back soon, next to those already queued.
                self._expected = len(batch) + len(self._pending)

    def _retire(self, seq: Sequence) -> None:
        # Counted per batch in ``_run``; here only the slot is freed.
        self.release(seq)
