"""Continuous batching: one loop decodes every active row one token per step; rows join and leave between steps.

The loop owns the model and one batched KV cache (transformers' ``DynamicCache``: rows left-padded
to a shared width, an attention mask marking the padding, explicit position ids per row). Between
two decode steps it admits queued rows while the padded cache they would need stays within a KV
token budget: their prompts are prefilled together into a cache of their own, which is left-padded
and stacked under the running one. A row that finishes, or whose client went away, leaves at once:
its cache row is dropped, and so are the columns that only padding uses any more.

Sliding-window layers (StarCoder2, Mistral) keep only the last ``window - 1`` columns and count the
columns they have seen in ``cumulative_length``, which sizes their attention mask: every join and
leave sets it to the new width and keeps the stored columns that the window still covers.

Rows joining a running batch are prefilled inside its next decode step (one forward pass for every
row) while that input stays within ``fused_prefill_tokens``, and, on sliding-window caches, while
the whole fused width fits inside the window; otherwise they are prefilled in a pass of their own.

With a prefix cache (``generation.prefix_cache``, serving turns it on) a row whose prompt shares a
long token prefix with an earlier one is prefilled alone on top of that prefix's cached columns, so
a keystroke costs only its new tokens; every prefilled prompt's columns are stored for the next. The
prefill caches record sliding layers' whole past, so that entries are complete, and trim them to
the window before the rows join the running batch.

Each row samples with its own settings and generator (``generation.sampler``), so greedy and
sampled requests share forward passes. A row whose sampling or post-processing fails is failed
alone; a failed prefill fails only the rows it admitted. Beam search rows run as a static batch
between steps.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from codetune.generation.engines.base import Engine, adapter_kwargs
from codetune.generation.engines.hf import StaticEngine, run_batch
from codetune.generation.prefix_cache import Hit, PrefixCache
from codetune.generation.sampler import choose_one, make_generator, plain
from codetune.generation.sequence import Sequence, advance, fail, finish, is_seq2seq, stop_token_ids
from codetune.threads import follow_load

logger = logging.getLogger(__name__)

DEFAULT_KV_TOKEN_BUDGET = 65536
# Joiners ride along with a decode step when the fused step's input (every row, padded to the longest
# joiner's new tokens) stays within this many tokens; longer prompts are prefilled in their own pass.
DEFAULT_FUSED_PREFILL_TOKENS = 512


@dataclass(eq=False)
class _Row:
    """A sequence being decoded: its next position, the token to feed next, and its random generator."""

    seq: Sequence
    position: int
    generator: Any
    pending: int = -1

    @property
    def remaining(self) -> int:
        return max(self.seq.params.max_new_tokens - len(self.seq.tokens), 0)


def _stored(layer: Any, width: int) -> int:
    """How many of ``width`` columns a cache layer keeps (a sliding window keeps ``window - 1``)."""
    if getattr(layer, "is_sliding", False):
        return min(width, layer.sliding_window - 1)
    return width


def _set_width(layer: Any, width: int) -> None:
    if hasattr(layer, "cumulative_length"):
        layer.cumulative_length = width


def cache_argument(model: Any) -> str:
    """The forward argument (and output field) of the KV cache: transformers 5.2x renamed
    ``past_key_values`` to ``cache`` and warns on the old name; 4.56 knows only the old one."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _namespace(seq: Sequence) -> Any:
    """What besides the prompt decides a row's KV: its adapter, when rows carry one."""
    return getattr(seq, "adapter", None)


class ContinuousEngine(Engine):
    """Token-level continuous batching over a causal LM."""

    name = "continuous"

    @classmethod
    def over(cls, model: Any, tokenizer: Any, **options: Any) -> Engine:
        """Continuous batching over a causal model; a seq2seq model gets static batches.

        (Its decoder cache also holds the encoder's outputs, which this loop does not stack.)
        """
        if is_seq2seq(model):
            return StaticEngine(model, tokenizer, **options)
        return cls(model, tokenizer, **options)

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kv_token_budget: int = DEFAULT_KV_TOKEN_BUDGET,
        join_wait_s: float = 0.002,
        prefix_cache: bool = False,
        prefix_cache_mb: float = 512.0,
        fused_prefill_tokens: int = DEFAULT_FUSED_PREFILL_TOKENS,
        **options: Any,
    ) -> None:
        options.pop("wait_s", None)
        options.pop("regroup_s", None)
        options.pop("token_budget", None)
        super().__init__(model, tokenizer, **options)
        self.kv_token_budget = kv_token_budget
        self.fused_prefill_tokens = fused_prefill_tokens
        self.join_wait_s = join_wait_s
        self._recent_rows = 0.0
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None
        self._device = next(model.parameters()).device
        self._cache_name = cache_argument(model)
        self._stop_ids = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else tokenizer.eos_token_id
        self.decode_steps = 0
        self.decode_rows = 0
        self.fused_joins = 0
        self.prefix_cache = (
            PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache and prefix_cache_mb > 0 else None
        )

    def stats(self) -> dict[str, int]:
        """The engine's counters (``batches`` counts forward passes) plus decode occupancy."""
        stats = super().stats()
        with self._cond:
            stats.update(
                decode_steps=self.decode_steps, decode_rows=self.decode_rows, fused_joins=self.fused_joins
            )
            if self.prefix_cache is not None:
                stats.update(self.prefix_cache.stats())
        return stats

    # -- the loop -------------------------------------------------------------------------------
    def _worker(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._pending or self._rows or self._chores or self._stopping):
                        self._cond.wait(timeout=0.5)
                    self._wait_for_joiners()
                    if self._stopping:
                        for seq in list(self._pending) + [r.seq for r in self._rows]:
                            finish(seq, "cancelled")
                        return
                    new = self._admissions(self._pending)
                self._run_chores()
                self._tick(new)
                # Hand the GIL to the HTTP thread between steps, so that requests get parsed and
                # answered (and join the batch) while the loop keeps decoding.
                time.sleep(0)

    def _wait_for_joiners(self) -> None:
        """Under concurrent load, give clients that just finished a moment to come back (lock held).

        Closed-loop clients re-send as soon as their answer arrives; without this pause the loop
        decodes their neighbours alone while their requests are still being parsed. With one client
        (the recent average is about one row) it never waits.
        """
        self._recent_rows = 0.9 * self._recent_rows + 0.1 * (len(self._rows) + len(self._pending))
        if self.join_wait_s and not self._pending and len(self._rows) + 1 < self._recent_rows:
            self._cond.wait(timeout=self.join_wait_s)

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        import torch

        finished: list[Sequence] = []
        for seq in seqs:
            user = seq.on_done
            seq.on_done = lambda s, user=user: (finished.append(s), user(s) if user else None)
            self._hold(seq)
        waiting = deque(seqs)
        with torch.inference_mode():
            while waiting or self._rows:
                self._tick(self._admissions(waiting))
                while finished:
                    yield finished.pop(0)

    def _tick(self, new: list[Sequence]) -> None:
        follow_load()  # torch's threads follow the free cores, in whichever thread decodes
        joiners: list[tuple[Sequence, Hit | None]] = []
        if new:
            try:
                joiners = self._admit(new)
            except Exception as error:  # only the rows being admitted fail
                logger.exception("prefill failed")
                self._fail(new, error)
        if self._rows or joiners:
            try:
                self._step(joiners)
            except Exception as error:  # a failed forward pass fails the rows in it, the loop goes on
                logger.exception("decoding step failed")
                self._fail([r.seq for r in self._rows] + [s for s, _ in joiners], error)
                self._rows, self._cache, self._mask = [], None, None

    def _cost(self, rows: int, width: int, remaining: int) -> int:
        """KV tokens a padded batch of ``rows`` rows needs at its widest."""
        return rows * (width + remaining)

    def _admissions(self, waiting: deque[Sequence]) -> list[Sequence]:
        """Waiting sequences that fit the KV token budget (at least one when nothing runs).

        No waiting for company: a request that comes a moment later joins at the next step.
        """
        new: list[Sequence] = []
        width = self._mask.shape[1] if self._rows else 0
        remaining = max((r.remaining for r in self._rows), default=0)
        while waiting and len(self._rows) + len(new) < self.max_batch_size:
            seq = waiting[0]
            grown_width = max(width, len(seq.prompt_ids))
            grown_remaining = max(remaining, seq.params.max_new_tokens)
            cost = self._cost(len(self._rows) + len(new) + 1, grown_width, grown_remaining)
            if cost > self.kv_token_budget and (self._rows or new):
                break
            new.append(waiting.popleft())
            width, remaining = grown_width, grown_remaining
        return new

    # -- admitting ------------------------------------------------------------------------------
    def _admit(self, seqs: list[Sequence]) -> list[tuple[Sequence, Hit | None]]:
        """Start new rows: beam search apart, the rest prefilled now or returned to join the next step.

        Rows prefilled now are stacked under the running batch and take their first tokens; the
        returned ones (with their prefix-cache hits) are prefilled by ``_step`` alongside the decode.
        """

        ready, beams = [], []
        for seq in seqs:
            if seq.cancelled or seq.params.max_new_tokens == 0:
                finish(seq, "cancelled" if seq.cancelled else "length")
            elif seq.params.num_beams > 1:
                beams.append(seq)
            else:
                ready.append(seq)
        for key in {s.params.group_key() for s in beams}:
            group = [s for s in beams if s.params.group_key() == key]
            try:
                run_batch(self.model, self.tokenizer, group)
            except Exception as error:
                self._fail(group, error)
        joiners = [(seq, self._lookup(seq)) for seq in ready]
        if self._fusable(joiners):
            return joiners  # prefilled by the next decode step, in the same forward pass
        self._prefill_apart(joiners)
        return []

    def _prefill_apart(self, joiners: list[tuple[Sequence, Hit | None]]) -> None:
        """Prefill in passes of their own: each cache hit alone on its prefix, the rest together."""
        rest = []
        for seq, hit in joiners:
            if hit is None:
                rest.append(seq)
            else:
                self._prefill([seq], hit)
        if rest:
            self._prefill(rest)

    def _fusable(self, joiners: list[tuple[Sequence, Hit | None]]) -> bool:
        """Whether these rows can be prefilled inside the next decode step.

        Only beside running rows, and while the fused input, every row padded to the longest
        joiner's new tokens, stays within ``fused_prefill_tokens``. A sliding-window layer masks by
        column, and the fused step puts padding between a running row's past and its new token, so
        it is fused only while the whole fused width fits inside the window: there the window masks
        nothing and keeps every column, and the layer is exactly a full one.
        """
        if not joiners or not self._rows or self.fused_prefill_tokens <= 0:
            return False
        longest = max(len(s.prompt_ids or [0]) - (h.tokens if h else 0) for s, h in joiners)
        if (len(self._rows) + len(joiners)) * longest > self.fused_prefill_tokens:
            return False
        past = max([self._mask.shape[1], *(h.tokens for _, h in joiners if h is not None)])
        return all(
            past + longest <= layer.sliding_window - 1
            for layer in self._cache.layers
            if getattr(layer, "is_sliding", False)
        )

    def _lookup(self, seq: Sequence) -> Hit | None:
        if self.prefix_cache is None or not seq.prefix_cache or not seq.prompt_ids:
            return None
        with self._cond:  # stats() reads the cache's counters from the HTTP thread
            return self.prefix_cache.lookup(seq.prompt_ids, _namespace(seq))

    def _prefill(self, ready: list[Sequence], hit: Hit | None = None) -> None:
        """Prefill rows together (or one row after its cached prefix), store their KV, join the batch."""
        import torch
        from transformers import DynamicCache

        prompts = [s.prompt_ids or [self.tokenizer.eos_token_id] for s in ready]
        cache = DynamicCache(config=self.model.config)
        if self.prefix_cache is not None:
            for layer in cache.layers:
                if getattr(layer, "is_sliding", False) and hasattr(layer, "record_past"):
                    layer.record_past = True  # keep every column until stored (trimmed below)
        if hit is not None:
            [prompt] = prompts
            done = hit.tokens
            for layer, (keys, values) in zip(cache.layers, hit.layers, strict=True):
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
                _set_width(layer, done)
            ids = torch.tensor([prompt[done:]], device=self._device)
            mask = torch.ones((1, len(prompt)), dtype=torch.long, device=self._device)
            positions = torch.arange(done, len(prompt), device=self._device)[None]
            ready[0].cached_tokens = done
        else:
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in prompts], device=self._device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self._device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self._cache_name: cache},
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: the vocabulary projection is the big one
            **adapter_kwargs(ready),
        )
        with self._cond:
            self.batches += 1
        cache = getattr(out, self._cache_name)
        if self.prefix_cache is not None:
            self._store(ready, prompts, cache)
            for layer in cache.layers:
                if getattr(layer, "record_past", False):
                    layer.record_past = False
                    layer.keys = layer.keys[:, :, -layer.sliding_window + 1 :]
                    layer.values = layer.values[:, :, -layer.sliding_window + 1 :]
        rows = [
            _Row(s, len(p), make_generator(s.params, s.copy, self._device)) for s, p in zip(ready, prompts)
        ]
        self._stack(cache, mask, rows)
        self._take(rows, out.logits[:, -1, :], offset=len(self._rows) - len(rows))

    def _store(self, seqs: list[Sequence], prompts: list[list[int]], cache: Any, first_row: int = 0) -> None:
        """Copy each row's prompt columns (its cache row without the left padding) into the prefix cache."""
        for i, (seq, prompt) in enumerate(zip(seqs, prompts), start=first_row):
            if not seq.prefix_cache or not seq.prompt_ids:
                continue
            layers = [
                (
                    layer.keys[i : i + 1, :, layer.keys.shape[-2] - len(prompt) :].clone(),
                    layer.values[i : i + 1, :, layer.values.shape[-2] - len(prompt) :].clone(),
                )
                for layer in cache.layers
            ]
            with self._cond:
                self.prefix_cache.store(prompt, layers, _namespace(seq))

    def _stack(self, cache: Any, mask: Any, rows: list[_Row]) -> None:
        """Append rows (their cache and mask) to the running batch, left-padding the narrower side."""
        import torch
        import torch.nn.functional as F

        if not self._rows:
            self._cache, self._mask, self._rows = cache, mask, rows
            return
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)
        merged = []
        for mine, theirs in zip(self._cache.layers, cache.layers):
            keep = _stored(mine, width)
            pairs = []
            for a, b in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                pairs.append(
                    torch.cat(
                        [F.pad(a, (0, 0, keep - a.shape[-2], 0)), F.pad(b, (0, 0, keep - b.shape[-2], 0))]
                    )
                )
            merged.append(pairs)
        # Only now change the running cache, so that a failure above leaves it as it was.
        for layer, (keys, values) in zip(self._cache.layers, merged):
            layer.keys, layer.values = keys, values
            _set_width(layer, width)
        self._mask = torch.cat([F.pad(self._mask, (width - old, 0)), F.pad(mask, (width - new, 0))])
        self._rows = self._rows + rows

    # -- decoding -------------------------------------------------------------------------------
    def _step(self, joiners: list[tuple[Sequence, Hit | None]] = ()) -> None:
        """Drop cancelled rows, feed every row its last token (and joiners their prompts), take the next ones."""
        import torch

        gone = [i for i, r in enumerate(self._rows) if r.seq.cancelled or r.seq.done]
        for i in gone:
            finish(self._rows[i].seq, "cancelled")
        if gone:
            self._keep([i for i in range(len(self._rows)) if i not in set(gone)])
        if joiners:
            if self._rows and self._fusable(joiners):
                try:
                    return self._fused_step(joiners)
                except Exception:  # nothing has changed yet: decode and prefill apart, as without fusion
                    logger.exception("fused prefill failed; prefilling the joining rows apart")
            try:
                self._prefill_apart(joiners)
            except Exception as error:  # only the joining rows fail
                logger.exception("prefill failed")
                self._fail([s for s, _ in joiners], error)
                self._keep([i for i, r in enumerate(self._rows) if r.seq not in {s for s, _ in joiners}])
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
            **{self._cache_name: self._cache},
            use_cache=True,
            **adapter_kwargs([r.seq for r in self._rows]),
        )
        with self._cond:
            self.batches += 1
            self.decode_steps += 1
            self.decode_rows += len(self._rows)
        for row in self._rows:
            row.position += 1
        self._take(self._rows, out.logits[:, -1, :], offset=0)

    def _fused_step(self, joiners: list[tuple[Sequence, Hit | None]]) -> None:
        """One forward pass that decodes the running rows and prefills the joiners.

        The joiners' rows are added to the cache (their cached prefix, or nothing, right-aligned in
        the current width), and every row feeds the same number of new tokens: a running row its
        pending token after padding, a joiner the prompt tokens its prefix does not cover. The
        padding this leaves inside the running rows is squeezed out afterwards, so that each row's
        columns are right-aligned again. The running cache is replaced only once the pass succeeded.
        """
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        seqs = [s for s, _ in joiners]
        prompts = [s.prompt_ids or [self.tokenizer.eos_token_id] for s in seqs]
        done = [h.tokens if h is not None else 0 for _, h in joiners]
        width = self._mask.shape[1]
        past = max([width, *done])
        fed = [1] * len(self._rows) + [len(p) - d for p, d in zip(prompts, done)]
        steps = max(fed)

        cache = DynamicCache(config=self.model.config)
        for index, (layer, running) in enumerate(zip(cache.layers, self._cache.layers, strict=True)):
            tensors = []
            for which, mine in enumerate((running.keys, running.values)):
                heads, dim = mine.shape[1], mine.shape[-1]
                parts = [F.pad(mine, (0, 0, past - mine.shape[-2], 0))]
                for _, hit in joiners:
                    if hit is None:
                        parts.append(mine.new_zeros((1, heads, past, dim)))
                    else:
                        cached = hit.layers[index][which]
                        parts.append(F.pad(cached, (0, 0, past - cached.shape[-2], 0)))
                tensors.append(torch.cat(parts))
            layer.lazy_initialization(*tensors)
            layer.keys, layer.values = tensors
            _set_width(layer, past)

        old_mask = F.pad(self._mask, (past - width, 0))
        joiner_mask = torch.tensor([[0] * (past - d) + [1] * d for d in done], dtype=old_mask.dtype)
        new_mask = torch.tensor([[0] * (steps - n) + [1] * n for n in fed], dtype=old_mask.dtype)
        mask = torch.cat([torch.cat([old_mask, joiner_mask.to(self._device)]), new_mask.to(self._device)], 1)
        tails = [[r.pending] for r in self._rows] + [p[d:] for p, d in zip(prompts, done)]
        ids = torch.tensor([[self._pad_id] * (steps - len(t)) + t for t in tails], device=self._device)
        starts = torch.tensor([r.position for r in self._rows] + done, device=self._device)
        shift = (
            torch.arange(steps, device=self._device)[None]
            - (steps - torch.tensor(fed, device=self._device))[:, None]
        )
        positions = (starts[:, None] + shift).clamp(min=0)
        rows = self._rows
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self._cache_name: cache},
            use_cache=True,
            logits_to_keep=1,
            **adapter_kwargs([r.seq for r in rows] + seqs),
        )
        cache = getattr(out, self._cache_name)

        # Squeeze out the padding: a stable sort puts each row's padding columns first, in order.
        kept = int(mask.sum(1).max())
        order = torch.argsort(mask, dim=1, stable=True)[:, mask.shape[1] - kept :]
        for layer in cache.layers:
            heads, dim = layer.keys.shape[1], layer.keys.shape[-1]
            index = order[:, None, :, None].expand(-1, heads, -1, dim)
            layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
            _set_width(layer, kept)
        self._cache, self._mask = cache, mask.gather(1, order)
        with self._cond:
            self.batches += 1
            self.decode_steps += 1
            self.decode_rows += len(rows)
            self.fused_joins += len(seqs)
        for row in rows:
            row.position += 1
        for seq, d in zip(seqs, done):
            seq.cached_tokens = d
        if self.prefix_cache is not None:
            self._store(seqs, prompts, cache, first_row=len(rows))
        self._rows = rows + [
            _Row(s, len(p), make_generator(s.params, s.copy, self._device)) for s, p in zip(seqs, prompts)
        ]
        self._take(self._rows, out.logits[:, -1, :], offset=0)

    def _take(self, rows: list[_Row], logits: Any, offset: int) -> None:
        """Choose each row's next token, advance it, and drop the rows that finished."""
        finished = []
        for i, (row, token, logp) in enumerate(zip(rows, *self._choose(rows, logits))):
            try:
                if token is None or advance(row.seq, token, self.tokenizer, self._stop_ids, logp):
                    finished.append(offset + i)
                else:
                    row.pending = token
            except Exception as error:  # post-processing, a client pattern, a callback: this row only
                fail(row.seq, error)
                finished.append(offset + i)
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
        width = mask.shape[1] - first
        for layer in self._cache.layers:
            keep_columns = _stored(layer, width)
            layer.keys = layer.keys[index, :, layer.keys.shape[-2] - keep_columns :]
            layer.values = layer.values[index, :, layer.values.shape[-2] - keep_columns :]
            _set_width(layer, width)
        self._mask = mask[:, first:]
        self._rows = [self._rows[i] for i in keep]

    def _choose(self, rows: list[_Row], logits: Any) -> tuple[list[int | None], list[Any]]:
        """Next token per row with its own settings (None for a row whose sampling failed)."""
        if all(plain(r.seq.params, len(r.seq.tokens)) for r in rows):
            keep = [r.seq.keep_logprobs for r in rows]
            logp = logits.float().log_softmax(-1) if any(keep) else None
            return logits.argmax(-1).tolist(), [logp[i] if k else None for i, k in enumerate(keep)]
        tokens: list[int | None] = []
        logps: list[Any] = []
        for i, row in enumerate(rows):
            seq = row.seq
            try:
                token, logp = choose_one(
                    logits[i],
                    seq.params,
                    seq.prompt_ids,
                    seq.tokens,
                    self._stop_ids,
                    row.generator,
                    seq.keep_logprobs,
                )
            except Exception as error:
                fail(seq, error)
                token, logp = None, None
            tokens.append(token)
            logps.append(logp)
        return tokens, logps
