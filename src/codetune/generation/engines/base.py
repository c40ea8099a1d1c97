"""What every engine offers: ``submit`` / ``stream`` / ``cancel`` for serving, ``run`` for offline jobs.

An engine owns the model in one worker thread (``start``/``stop``). ``submit`` queues sequences
(bounded: QueueFull past ``max_queue``), each streams through its own callbacks and can be cancelled
at any step. ``run`` completes sequences in the caller's thread when no worker runs (generate, eval,
the Python API), yielding each as it finishes.

An engine is made over a loaded model (``over``) or loads its own (``load``, from a resolved model
reference); ``check`` refuses, before anything loads, what the engine would run differently.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from codetune.generation.params import SamplingParams
from codetune.generation.sequence import Sequence, context_length, fail, is_seq2seq

logger = logging.getLogger(__name__)


def adapter_kwargs(seqs: list[Sequence]) -> dict[str, Any]:
    """peft's mixed-adapter batch argument when rows name their adapters (serve's named adapters)."""
    names = [seq.adapter for seq in seqs]
    if all(name is None for name in names):
        return {}
    return {"adapter_names": [name or "__base__" for name in names]}


def _rank_device() -> str | None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return str(PartialState().device)


class QueueFull(Exception):
    """More sequences are waiting or running than the server allows."""


class Engine:
    """The shared queue, slots, worker thread and counters; subclasses decode."""

    name = "base"
    gpu_only = False  # runs on a GPU whatever the device setting (vLLM)
    gguf_only = False  # loads a GGUF file itself, never a transformers model (llama.cpp)

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        **options: Any,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self._pending: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._slots: set[Sequence] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._chores: deque[tuple[Callable[[], Any], Future]] = deque()
        self.batches = 0
        self.sequences = 0
        self.tokens = 0
        self.cancelled = 0

    # -- making one -------------------------------------------------------------------------------
    @classmethod
    def over(cls, model: Any, tokenizer: Any, **options: Any) -> Engine:
        """An engine of this kind over a loaded model."""
        return cls(model, tokenizer, **options)

    @classmethod
    def check(cls, ref: Any, params: SamplingParams) -> None:
        """Refuse (ConfigError) a model or settings this engine would run wrongly, before any load."""

    @classmethod
    def load(cls, ref: Any, tokenizer: Any, *, device: str | None = None, **options: Any) -> Engine:
        """Load the model ``ref`` names (float16 on CUDA) and make an engine over it; under
        `accelerate launch` each rank's model goes to that rank's device."""
        import torch

        from codetune.modeling.loading import default_device, load_model

        device = device or _rank_device() or default_device()
        model = load_model(ref, device=device, dtype=torch.float16 if device.startswith("cuda") else None)
        return cls.over(model, tokenizer, **options)

    @property
    def context_length(self) -> int | None:
        """The model's maximum positions (prompt + completion), when its config says."""
        return context_length(self.model)

    @property
    def seq2seq(self) -> bool:
        """Whether the model is an encoder-decoder (its prompt is the encoder's input, never trimmed)."""
        return is_seq2seq(self.model)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the worker thread (serving); ``run`` needs none."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name=f"codetune-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._cond:
            chores, self._chores = list(self._chores), deque()
        for _, future in chores:
            future.set_exception(RuntimeError("the engine stopped"))

    def between_steps(self, chore: Callable[[], Any]) -> Future:
        """Run ``chore`` in the worker between two decoding steps (inline when no worker runs).

        The one safe moment to change the model (load or drop an adapter): no forward pass sees half
        of a change. The future holds the chore's result or its exception.
        """
        future: Future = Future()
        if self._thread is None or not self._thread.is_alive():
            self._do(chore, future)
            return future
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the engine is stopping"))
                return future
            self._chores.append((chore, future))
            self._cond.notify_all()
        return future

    def _run_chores(self) -> None:
        """Run the chores queued by ``between_steps`` (the worker calls this between steps)."""
        while True:
            with self._cond:
                if not self._chores:
                    return
                chore, future = self._chores.popleft()
            self._do(chore, future)

    @staticmethod
    def _do(chore: Callable[[], Any], future: Future) -> None:
        try:
            future.set_result(chore())
        except BaseException as error:  # the caller gets it; the worker goes on
            future.set_exception(error)

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

    # -- the interface ----------------------------------------------------------------------------
    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences (all or none); QueueFull when the slots would overflow."""
        with self._cond:
            if len(self._slots) + len(seqs) > self.max_queue:
                raise QueueFull(f"{len(self._slots)} sequences in flight, limit {self.max_queue}")
            for seq in seqs:
                self._hold(seq)
            self._pending.extend(seqs)
            self._cond.notify_all()

    def cancel(self, seqs: list[Sequence]) -> None:
        """Stop sequences (at the next step if running) and free their slots now."""
        for seq in seqs:
            if not seq.done and not seq.cancelled:
                seq.cancel()
                with self._cond:
                    self.cancelled += 1
            self.release(seq)

    def stream(self, seqs: list[Sequence]) -> Iterator[tuple[int, str | None]]:
        """Submit and yield ``(index, text delta)``, then ``(index, None)`` when that row is done."""
        events: queue.Queue[tuple[int, str | None]] = queue.Queue()
        for i, seq in enumerate(seqs):
            seq.on_text = lambda delta, i=i: events.put((i, delta))
            seq.on_done = lambda s, i=i: events.put((i, None))
        self.submit(seqs)
        remaining = len(seqs)
        try:
            while remaining:
                event = events.get()
                remaining -= event[1] is None
                yield event
        finally:
            self.cancel([s for s in seqs if not s.done])

    def run(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        """Complete ``seqs`` (no queue bound), yielding each as it finishes (in the caller's thread)."""
        if self._thread is not None:
            done: queue.Queue[Sequence] = queue.Queue()
            for seq in seqs:
                user = seq.on_done
                seq.on_done = lambda s, user=user: (user(s) if user else None, done.put(s))
            with self._cond:
                for seq in seqs:
                    self._hold(seq)
                self._pending.extend(seqs)
                self._cond.notify_all()
            for _ in seqs:
                yield done.get()
            return
        yield from self._run_inline(seqs)

    # -- for subclasses ---------------------------------------------------------------------------
    def _hold(self, seq: Sequence) -> None:
        user_done = seq.on_done

        def done(s: Sequence, user_done: Any = user_done) -> None:
            self._retire(s)
            if user_done is not None:
                user_done(s)

        seq.on_done = done
        self._slots.add(seq)

    def release(self, seq: Sequence) -> None:
        with self._cond:
            self._slots.discard(seq)

    def _retire(self, seq: Sequence) -> None:
        with self._cond:
            self._slots.discard(seq)
            self.sequences += 1
            self.tokens += len(seq.tokens)

    def _fail(self, seqs: list[Sequence], error: BaseException) -> None:
        for seq in seqs:
            fail(seq, error)

    def _worker(self) -> None:
        raise NotImplementedError

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        raise NotImplementedError
