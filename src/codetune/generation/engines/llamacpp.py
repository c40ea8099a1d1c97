"""llama.cpp behind the same interface: a GGUF file served as it is (``serve --engine llamacpp``).

A GGUF is what people run locally, and llama.cpp decodes it on a CPU several times faster than
transformers decodes the same weights dequantized (quantized matmuls, no 262,144-row float32 head
read per token). codetune keeps everything else: prompts come from the one request builder (its
tokenizer is the GGUF's own, rebuilt by ``codetune.modeling.gguf``), each token is chosen from
llama.cpp's logits by codetune's sampler (the same greedy choice, seeds, penalties and
log-probabilities as the HF engines), and ``advance`` streams, stops and cuts the text.

llama.cpp keeps one sequence in its cache, so rows run one after another, first come first served;
each reuses the cache of the longest prefix it shares with the row before (an editor's next
keystroke re-reads only its new tokens). Adapters are not loaded: export a run to GGUF
(``codetune export RUN --format gguf``) and serve that file. Needs ``pip install llama-cpp-python``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError
from codetune.generation.engines.base import Engine
from codetune.generation.params import SamplingParams
from codetune.generation.sampler import choose_one, make_generator
from codetune.generation.sequence import Sequence, advance, fail, finish, stop_token_ids

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install llama-cpp-python (it builds llama.cpp; see docs/generate-serve.md)"
# The HF engines' batching settings, meaningless for one llama.cpp sequence.
_HF_OPTIONS = (
    "wait_s",
    "regroup_s",
    "token_budget",
    "kv_token_budget",
    "fused_prefill_tokens",
    "prefix_cache",
    "prefix_cache_mb",
)


def require_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(f"engine 'llamacpp' needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


class LlamaCppEngine(Engine):
    """Rows decoded one at a time by llama.cpp, each token chosen by codetune's sampler."""

    name = "llamacpp"
    gguf_only = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        llama: Any = None,
        context: int | None = None,
        **options: Any,
    ) -> None:
        for name in _HF_OPTIONS:
            options.pop(name, None)
        # Rows run one after another in arrival order, so the server's fair admission is handed only
        # the running row and the next: which client goes next stays its choice, not this queue's.
        options["max_batch_size"] = 2
        super().__init__(None, tokenizer, **options)
        self.llama, self.context = llama, context
        self.stop_ids = stop_token_ids(tokenizer)
        self.reused_tokens = 0

    @classmethod
    def over(cls, model: Any, tokenizer: Any, **options: Any) -> Engine:
        raise ConfigError(
            "engine 'llamacpp' reads a GGUF file itself: serve --model FILE.gguf --engine llamacpp"
        )

    @classmethod
    def check(cls, ref: Any, params: SamplingParams) -> None:
        if params.num_beams > 1:
            raise ConfigError(f"engine 'llamacpp' does not run beam search (num_beams={params.num_beams})")

    @classmethod
    def load(
        cls,
        ref: Any,
        tokenizer: Any,
        *,
        device: str | None = None,
        context: int | None = None,
        threads: int | None = None,
        **options: Any,
    ) -> LlamaCppEngine:
        """llama.cpp over the GGUF file ``ref`` (a path, or the ``GgufInfo`` already read from one: a
        truncated or corrupt file is refused before llama.cpp reads it), with ``context`` positions
        (default: the file's own)."""
        from codetune.modeling.gguf import GgufInfo, read_info

        llama_cpp = require_llama_cpp()
        info = ref if isinstance(ref, GgufInfo) else read_info(Path(ref))
        path = info.path
        trained = int(info.metadata.get(f"{info.architecture}.context_length") or 0) or None
        # Every position of the context is KV cache llama.cpp allocates up front: a long-context file
        # gets 8,192 unless asked for more (never more than it was trained for).
        n_ctx = min(context or 8192, trained) if trained else context or 4096
        gpu_layers = -1 if (device or "").startswith("cuda") else 0
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads or os.cpu_count() or 1,
                n_gpu_layers=gpu_layers,
                logits_all=False,
                verbose=False,
            )
        except Exception as error:  # llama.cpp says little more than "failed to load model"
            from codetune.errors import ModelLoadError

            raise ModelLoadError(f"{path}: llama.cpp could not load this GGUF ({error})") from None
        if llama.n_vocab() < len(tokenizer):
            raise ConfigError(
                f"{path}: llama.cpp reads {llama.n_vocab()} tokens but its tokenizer has {len(tokenizer)}"
            )
        return cls(None, tokenizer, llama=llama, context=n_ctx, **options)

    @property
    def context_length(self) -> int | None:
        return self.context

    @property
    def seq2seq(self) -> bool:
        return False

    def stop(self) -> None:
        super().stop()
        if self.llama is not None:
            self.llama.close()
            self.llama = None

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "reused_prompt_tokens": self.reused_tokens}

    # -- decoding -----------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._chores and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    pending, self._pending = list(self._pending), type(self._pending)()
                    break
                seq = self._pending.popleft() if self._pending else None
            self._run_chores()
            if seq is not None:
                self._decode(seq)
        for seq in pending:
            finish(seq, "cancelled")

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        for seq in seqs:
            self._decode(seq)
            yield seq

    def _decode(self, seq: Sequence) -> None:
        """One row from its prompt to its end, the cache of the previous row's shared prefix kept."""
        import numpy as np
        import torch

        if seq.cancelled or seq.params.max_new_tokens == 0:
            finish(seq, "cancelled" if seq.cancelled else "length")
            return
        llama = self.llama
        try:
            prompt = list(seq.prompt_ids)
            if len(prompt) + seq.params.max_new_tokens > self.context:
                raise ValueError(
                    f"{len(prompt)} prompt + {seq.params.max_new_tokens} new tokens exceed the context "
                    f"of {self.context}"
                )
            held = llama.input_ids[: llama.n_tokens].tolist()
            cached = llama.longest_token_prefix(prompt, held) if seq.prefix_cache else 0
            cached = min(cached, len(prompt) - 1)  # the last prompt token is read again for its logits
            llama.n_tokens = cached
            seq.cached_tokens = cached
            with self._cond:
                self.reused_tokens += cached
                self.batches += 1
            llama.eval(prompt[cached:])
            generator = make_generator(seq.params, seq.copy, "cpu")
            n_vocab = llama.n_vocab()
            while True:
                logits = torch.from_numpy(
                    np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,)).copy()
                )
                token, logp = choose_one(
                    logits, seq.params, prompt, seq.tokens, self.stop_ids, generator, seq.keep_logprobs
                )
                if advance(seq, token, self.tokenizer, self.stop_ids, logp):
                    return
                llama.eval([token])
        except Exception as error:  # this row fails; the engine serves the next one
            logger.warning("llama.cpp row failed: %s", error)
            llama.n_tokens = 0  # the cache may hold half a row
            fail(seq, error)
