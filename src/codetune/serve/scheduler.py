"""Continuous batching: one loop decodes every active row one token per step, rows join and leave between steps.

The loop owns the model and one batched KV cache (transformers' ``DynamicCache``, rows left-padded to
a shared width, an attention mask marking the padding, explicit position ids per row). Between two
decode steps it admits queued requests: their prompts are prefilled together into a cache of their
own, which is left-padded and stacked under the running one. A row that hits EOS, a stop sequence,
its cut pattern or ``max_tokens``, or whose client went away, leaves at once: its cache row is
dropped, and so are the cache columns that only padding uses any more. Each row samples with its own
settings and its own random generator, so greedy and sampled requests, or requests with different
penalties, share forward passes. Beam search keeps the whole-batch ``model.generate`` path (run
between steps); seq2seq models use the micro-batcher (``serve.batcher``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from codetune.inference.engine import Sequence, _finish, _stop_token_ids, advance, run_batch
from codetune.serve.batcher import Batcher

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Row:
    """A sequence being decoded: its next position, the token to feed next, and its random generator."""

    seq: Sequence
    position: int
    generator: Any
    pending: int = -1

    @property
    def plain(self) -> bool:
        """Greedy with no penalty, minimum or logprobs: a batched argmax is enough."""
        p = self.seq.params
        return (
            p.greedy
            and p.repetition_penalty == 1.0
            and not p.presence_penalty
            and not p.frequency_penalty
            and len(self.seq.tokens) >= p.min_new_tokens
            and p.logprobs is None
        )


class ContinuousBatcher(Batcher):
    """Token-level continuous batching over a causal LM, behind the micro-batcher's interface."""

    def __init__(self, model: Any, tokenizer: Any, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None
        self._device = next(model.parameters()).device
        self._stop_ids = _stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else tokenizer.eos_token_id
        self.decode_steps = 0
        self.decode_rows = 0

    def stats(self) -> dict[str, int]:
        """The micro-batcher's counters (``batches`` counts forward passes) plus decode occupancy."""
        stats = super().stats()
        with self._cond:
            stats.update(decode_steps=self.decode_steps, decode_rows=self.decode_rows)
        return stats

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences; copies of one request with a seed get seed, seed + 1, ... so they differ."""
        copies: dict[int, int] = {}
        for seq in seqs:
            k = copies.get(id(seq.params), 0)
            copies[id(seq.params)] = k + 1
            seq._copy = k  # type: ignore[attr-defined]
        super().submit(seqs)

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        import time

        import torch

        with torch.inference_mode():
            while True:
                new = self._admissions()
                if new is None:
                    return
                try:
                    if new:
                        self._admit(new)
                    if self._rows:
                        self._step()
                        # Hand the GIL to the HTTP thread between steps, so that requests get parsed
                        # and answered (and join the batch) while the loop keeps decoding.
                        time.sleep(0)
                except Exception as error:  # the server never dies on a request
                    logger.exception("decoding step failed")
                    self._fail([r.seq for r in self._rows] + (new or []), error)
                    self._rows, self._cache, self._mask = [], None, None

    def _admissions(self) -> list[Sequence] | None:
        """Queued sequences that fit; None when stopping.

        No waiting for company: a request that comes a moment later joins at the next step.
        """
        with self._cond:
            while not self._pending and not self._rows and not self._stopping:
                self._cond.wait(timeout=0.5)
            if self._stopping:
                for seq in list(self._pending) + [r.seq for r in self._rows]:
                    _finish(seq, "cancelled")
                return None
            new = []
            while self._pending and len(self._rows) + len(new) < self.max_batch_size:
                new.append(self._pending.popleft())
            return new

    def _retire(self, seq: Sequence) -> None:
        with self._cond:
            self.sequences += 1
            self.tokens += len(seq.tokens)

    def _fail(self, seqs: list[Sequence], error: Exception) -> None:
        for seq in seqs:
            if not seq.done:
                seq.error = f"{type(error).__name__}: {error}"
                seq.finish_reason = "error"
                if seq.on_done is not None:
                    seq.on_done(seq)

    # -- admitting ------------------------------------------------------------------------------
    def _admit(self, seqs: list[Sequence]) -> None:
        """Prefill new rows together, stack their cache under the running one, take their first tokens."""
        import torch
        from transformers import DynamicCache

        ready, beams = [], []
        for seq in seqs:
            if seq.cancelled or seq.params.max_new_tokens == 0:
                _finish(seq, "cancelled" if seq.cancelled else "length")
                self._retire(seq)
            elif seq.params.num_beams > 1:
                beams.append(seq)
            else:
                ready.append(seq)
        for key in {s.params.group_key() for s in beams}:
            group = [s for s in beams if s.params.group_key() == key]
            run_batch(self.model, self.tokenizer, group)
            for seq in group:
                self._retire(seq)
        if not ready:
            return
        prompts = [s.prompt_ids or [self.tokenizer.eos_token_id] for s in ready]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in prompts], device=self._device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: the vocabulary projection is the big one
        )
        with self._cond:
            self.batches += 1
        rows = [_Row(s, len(p), self._generator(s)) for s, p in zip(ready, prompts)]
        self._stack(out.past_key_values, mask, rows)
        self._take(rows, out.logits[:, -1, :], offset=len(self._rows) - len(rows))

    def _generator(self, seq: Sequence) -> Any:
        import torch

        if seq.params.greedy:
            return None
        generator = torch.Generator(device=self._device)
        if seq.params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(seq.params.seed + getattr(seq, "_copy", 0))
        return generator

    def _stack(self, cache: Any, mask: Any, rows: list[_Row]) -> None:
        """Append rows (their cache and mask) to the running batch, left-padding the narrower side."""
        import torch
        import torch.nn.functional as F

        if not self._rows:
            self._cache, self._mask, self._rows = cache, mask, rows
            return
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat(
                [F.pad(mine.keys, (0, 0, width - old, 0)), F.pad(theirs.keys, (0, 0, width - new, 0))]
            )
            mine.values = torch.cat(
                [F.pad(mine.values, (0, 0, width - old, 0)), F.pad(theirs.values, (0, 0, width - new, 0))]
            )
        self._mask = torch.cat([F.pad(self._mask, (width - old, 0)), F.pad(mask, (width - new, 0))])
        self._rows = self._rows + rows

    # -- decoding -------------------------------------------------------------------------------
    def _step(self) -> None:
        """Drop cancelled rows, feed every row its last token, take the next ones."""
        import torch

        gone = [i for i, r in enumerate(self._rows) if r.seq.cancelled or r.seq.done]
        for i in gone:
            _finish(self._rows[i].seq, "cancelled")
            self._retire(self._rows[i].seq)
        if gone:
            self._keep([i for i in range(len(self._rows)) if i not in set(gone)])
            if not self._rows:
                return
        ids = torch.tensor([[r.pending] for r in self._rows], device=self._device)
        positions = torch.tensor([[r.position] for r in self._rows], device=self._device)
        ones = torch.ones((len(self._rows), 1), dtype=self._mask.dtype, device=self._device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        with self._cond:
            self.batches += 1
            self.decode_steps += 1
            self.decode_rows += len(self._rows)
        for row in self._rows:
            row.position += 1
        self._take(self._rows, out.logits[:, -1, :], offset=0)

    def _take(self, rows: list[_Row], logits: Any, offset: int) -> None:
        """Choose each row's next token, advance it, and drop the rows that finished."""
        tokens, logps = self._choose(rows, logits)
        finished = []
        for i, (row, token, logp) in enumerate(zip(rows, tokens, logps)):
            if advance(row.seq, token, self.tokenizer, self._stop_ids, logp):
                self._retire(row.seq)
                finished.append(offset + i)
            else:
                row.pending = token
        if finished:
            done = set(finished)
            self._keep([i for i in range(len(self._rows)) if i not in done])

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows; trim the cache columns that are padding in every remaining row."""
        import torch

        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self._device)
        mask = self._mask[index]
        first = int(mask.any(0).to(torch.int8).argmax())
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
        self._mask = mask[:, first:]
        self._rows = [self._rows[i] for i in keep]

    def _choose(self, rows: list[_Row], logits: Any) -> tuple[list[int], list[Any]]:
        """Next token per row with its own settings; log-probabilities for rows that asked."""
        import torch

        if all(r.plain for r in rows):
            return logits.argmax(-1).tolist(), [None] * len(rows)
        logits = logits.float()
        tokens, logps = [], []
        for i, row in enumerate(rows):
            x, seq, p = logits[i].clone(), row.seq, row.seq.params
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(seq.prompt_ids) | set(seq.tokens)), device=x.device)
                values = x[seen]
                x[seen] = torch.where(
                    values < 0, values * p.repetition_penalty, values / p.repetition_penalty
                )
            if (p.presence_penalty or p.frequency_penalty) and seq.tokens:
                counts = torch.bincount(torch.tensor(seq.tokens, device=x.device), minlength=x.shape[0]).to(
                    x.dtype
                )[: x.shape[0]]
                x = x - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).to(x.dtype)
            if len(seq.tokens) < p.min_new_tokens and self._stop_ids:
                x[list(self._stop_ids)] = float("-inf")
            logps.append(x.log_softmax(-1) if p.logprobs is not None else None)
            if p.greedy:
                tokens.append(int(x.argmax()))
                continue
            x = x / p.temperature
            if p.top_k and p.top_k < x.shape[0]:
                kth = torch.topk(x, p.top_k).values[-1]
                x = x.masked_fill(x < kth, float("-inf"))
            if p.top_p < 1.0:
                ordered, order = torch.sort(x, descending=True)
                probs = ordered.softmax(-1)
                drop = probs.cumsum(-1) - probs > p.top_p
                drop[0] = False
                x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
            probs = x.softmax(-1)
            tokens.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return tokens, logps
