"""Micro-batching: concurrent requests share forward passes.

A single worker thread owns the model. Requests queue sequences; the worker waits a few
milliseconds for company, then runs every queued sequence that shares the first one's decoding
settings (up to ``max_batch_size``) as one batch. Each sequence streams through its own callback
and can be cancelled at any step (its slot is freed at once). The number of sequences queued or
running is bounded; past it ``submit`` raises QueueFull.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from codetune.inference.engine import Sequence, run_batch

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More sequences are waiting or running than the server allows."""


class Batcher:
    """Owns the model in one worker thread and runs queued sequences in shared batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        wait_s: float = 0.005,
        max_queue: int = 64,
        regroup_s: float = 0.02,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.wait_s, self.max_queue = max_batch_size, wait_s, max_queue
        self.regroup_s = regroup_s
        self._expected = 1
        self._pending: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._slots: set[Sequence] = set()
        self._running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.sequences = 0
        self.tokens = 0
        self.cancelled = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="codetune-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        """Sequences queued or running that still hold a slot."""
        with self._cond:
            return len(self._slots)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "active": len(self._slots),
                "queued": len(self._pending),
                "batches": self.batches,
                "sequences": self.sequences,
                "tokens": self.tokens,
                "cancelled": self.cancelled,
            }

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences (all or none); QueueFull when the slots would overflow."""
        with self._cond:
            if len(self._slots) + len(seqs) > self.max_queue:
                raise QueueFull(f"{len(self._slots)} sequences in flight, limit {self.max_queue}")
            for seq in seqs:
                user_done = seq.on_done

                def done(s: Sequence, user_done: Any = user_done) -> None:
                    self.release(s)
                    if user_done is not None:
                        user_done(s)

                seq.on_done = done
                self._slots.add(seq)
                self._pending.append(seq)
            self._cond.notify_all()

    def release(self, seq: Sequence) -> None:
        with self._cond:
            self._slots.discard(seq)

    def cancel(self, seqs: list[Sequence]) -> None:
        """Stop sequences (at the next step if running) and free their slots now."""
        for seq in seqs:
            if not seq.done and not seq.cancelled:
                seq.cancel()
                with self._cond:
                    self.cancelled += 1
            self.release(seq)

    def _take(self) -> list[Sequence]:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait(timeout=0.5)
            if self._stopping:
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

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._stopping:
                    return
                continue
            try:
                run_batch(self.model, self.tokenizer, batch)
            except Exception as error:  # the server never dies on a request
                logger.exception("batch failed")
                for seq in batch:
                    if not seq.done:
                        seq.error = f"{type(error).__name__}: {error}"
                        seq.finish_reason = "error"
                        if seq.on_done is not None:
                            seq.on_done(seq)
            with self._cond:
                # Closed-loop clients of this batch come back soon, next to those already queued.
                self._expected = len(batch) + len(self._pending)
                self.batches += 1
                self.sequences += len(batch)
                self.tokens += sum(len(seq.tokens) for seq in batch)
