"""vLLM behind the same interface (optional: ``pip install 'codetune[vllm]'``; offline ``run`` only).

vLLM decodes; codetune finishes each row as the HF engines do: prompts come from the one request
builder (trimming, FIM through ``codetune.fim``), vLLM stops on the same stop token ids
(``stop_token_ids``: EOS, or a FIM family's end and sentinels) and stop strings, and the text is
decoded from vLLM's token ids by codetune's decoder, then cut by the same stops, client patterns and
post-processing. What vLLM cannot do the same way is refused before any model loads
(``VllmEngine.check``: beam search, seq2seq models, adapters with added-token rows), and all of it
runs without vllm installed: ``vllm.LLM`` is built when the first rows run, on the GPU
``pin_rank_gpu`` gives this `accelerate launch` rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codetune.artifacts.run import read_adapter_config
from codetune.errors import ConfigError, InputError
from codetune.fim import decode_continuation
from codetune.generation.engines.base import Engine
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import (
    Completion,
    Sequence,
    context_length,
    final_text,
    finish,
    stop_token_ids,
)

if TYPE_CHECKING:
    from codetune.modeling.loading import ModelRef

# Modules whose weights in an adapter mean rows for tokens the base vocabulary lacks.
_EMBEDDING_MODULES = ("embed_tokens", "wte", "lm_head", "embed_out", "word_embeddings", "shared")
# The ranks vLLM's LoRA kernels are built for (``max_lora_rank`` must be one of them).
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_sampling_kwargs(params: SamplingParams, copy: int, stop_ids: set[int]) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for one row (the ``copy``-th of its request).

    One vLLM row per codetune row (``n=1``): ``n`` copies are separate rows with seeds seed, seed+1,
    ... as on the HF engines. Raises ConfigError for settings vLLM would run differently.
    """
    if params.num_beams > 1:
        raise ConfigError(
            f"engine 'vllm' does not run beam search (num_beams={params.num_beams}): vLLM moved it out "
            "of SamplingParams into a separate API; use --engine hf for beams"
        )
    if params.max_new_tokens < 1:
        raise ConfigError("engine 'vllm' needs max_new_tokens >= 1 (rows with 0 finish before vLLM)")
    return {
        "n": 1,
        "temperature": params.temperature,  # 0: greedy, as codetune's
        "top_p": params.top_p,
        "top_k": params.top_k or -1,  # codetune's 0 and vLLM's -1 both mean off
        "repetition_penalty": params.repetition_penalty,  # over prompt and output, as HF's
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,  # holds back EOS and the stop ids, as codetune's sampler
        "stop": list(params.stop) or None,
        # Exactly codetune's stop ids (EOS among them): vLLM's own EOS, from generation_config.json,
        # may differ from the tokenizer's, which the HF engines stop on.
        "stop_token_ids": sorted(stop_ids),
        "ignore_eos": True,
        "seed": params.copy_seed(copy),
        "logprobs": params.logprobs,
        "skip_special_tokens": True,
    }


def complete_row(
    seq: Sequence,
    token_ids: list[int],
    finish_reason: str | None,
    stop_ids: set[int],
    tokenizer: Any,
    logprobs: list[dict[int, Any]] | None = None,
) -> None:
    """Finish ``seq`` from vLLM's output for it as codetune's own loop would have.

    A stop token ends a row without joining its tokens (vLLM keeps it); the text is decoded by
    codetune's decoder (the first token's leading space kept) and cut by the row's stops, patterns and
    post-processor; a cut makes the reason "stop".
    """
    ids = list(token_ids)
    stopped_on_token = bool(ids) and ids[-1] in stop_ids and finish_reason == "stop"
    if stopped_on_token:
        ids.pop()
    seq.tokens = ids
    if seq.params.logprobs is not None and logprobs:
        for token, entry in zip(ids, logprobs, strict=False):
            chosen = entry.get(token)
            seq.token_logprobs.append(float(_logprob(chosen)) if chosen is not None else float("-inf"))
            if seq.params.logprobs:
                ranked = sorted(entry.items(), key=lambda item: -_logprob(item[1]))[: seq.params.logprobs]
                seq.top_logprobs.append({tokenizer.decode([i]): float(_logprob(v)) for i, v in ranked})
    text, cut = final_text(seq, decode_continuation(tokenizer, ids))
    seq.text = text
    finish(seq, "length" if finish_reason == "length" and not cut else "stop")


def _logprob(value: Any) -> float:
    return value.logprob if hasattr(value, "logprob") else float(value)


class VllmEngine(Engine):
    """Offline generation through ``vllm.LLM``; ``submit``/``stream`` are not offered."""

    name = "vllm"
    gpu_only = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        ref: ModelRef | None = None,
        llm: Any = None,
        context: int | None = None,
        **options: Any,
    ) -> None:
        for name in ("wait_s", "regroup_s", "token_budget", "kv_token_budget", "fused_prefill_tokens"):
            options.pop(name, None)
        super().__init__(model, tokenizer, **options)
        self.ref, self.llm, self.context = ref, llm, context
        self.lora: Any = None
        self.stop_ids = stop_token_ids(tokenizer)

    @classmethod
    def over(cls, model: Any, tokenizer: Any, **options: Any) -> Engine:
        raise ConfigError("the vllm engine loads its own model: load_engine('vllm', ref, tokenizer)")

    @classmethod
    def check(cls, ref: Any, params: SamplingParams) -> None:
        check_vllm_model(ref)
        check_vllm_params(params)

    @classmethod
    def load(cls, ref: Any, tokenizer: Any, *, device: str | None = None, **options: Any) -> VllmEngine:
        """An engine over vLLM for a resolved model (base + optional LoRA adapter), on one GPU; vLLM
        itself starts when the first rows run, so that bad rows are refused before it loads."""
        return cls(None, tokenizer, ref=ref, context=vllm_context(ref), **options)

    @property
    def context_length(self) -> int | None:
        return self.context

    @property
    def seq2seq(self) -> bool:
        return False  # refused by check_vllm_model

    def start(self) -> None:
        """Start vLLM (``vllm.LLM`` over the model, on this rank's GPU); the first rows do it too."""
        if self.llm is not None:
            return
        try:
            import vllm
        except ImportError:
            raise ConfigError("engine 'vllm' needs vllm installed (pip install 'codetune[vllm]')") from None
        pin_rank_gpu()
        self.llm = vllm.LLM(**vllm_llm_kwargs(self.ref))
        if self.ref is not None and self.ref.adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(self.ref.adapter))

    def stop(self) -> None:
        self.llm = None

    def submit(self, seqs: list[Sequence]) -> None:
        raise NotImplementedError("the vllm engine runs offline jobs only (codetune generate)")

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        for seq in seqs:
            if seq.cancelled or seq.params.max_new_tokens == 0:  # as the HF engines: no decoding
                finish(seq, "cancelled" if seq.cancelled else "length")
                yield seq
        live = [s for s in seqs if not s.done]
        if not live:
            return
        self.start()
        import vllm

        # Chunks keep a killed run's loss small (finished rows are written as each chunk ends) while
        # giving vLLM's scheduler far more rows than one batch.
        chunk = max(self.max_batch_size * 16, 256)
        for begin in range(0, len(live), chunk):
            part = live[begin : begin + chunk]
            outputs = self.llm.generate(
                [{"prompt_token_ids": s.prompt_ids} for s in part],
                [vllm.SamplingParams(**vllm_sampling_kwargs(s.params, s.copy, self.stop_ids)) for s in part],
                lora_request=self.lora,
                use_tqdm=False,
            )
            for seq, output in zip(part, outputs, strict=True):
                completion = output.outputs[0]
                complete_row(
                    seq,
                    list(completion.token_ids),
                    completion.finish_reason,
                    self.stop_ids,
                    self.tokenizer,
                    completion.logprobs,
                )
                yield seq

    def _worker(self) -> None:  # pragma: no cover - never started
        raise NotImplementedError


def check_vllm_model(ref: ModelRef) -> None:
    """Refuse models vLLM would run wrongly: seq2seq ones, and adapters carrying added-token rows."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ref.base)
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"engine 'vllm' does not run seq2seq (encoder-decoder) models like {ref.base} "
            f"({config.model_type}); use --engine hf"
        )
    if ref.adapter is not None:
        adapter = Path(ref.adapter)
        reason = _unsupported_adapter(adapter) or _added_token_rows(
            adapter, ref, getattr(config, "vocab_size", None)
        )
        if reason:
            raise ConfigError(
                f"engine 'vllm' cannot apply the adapter in {ref.adapter}: {reason}, and vLLM's LoRA "
                "loads only the low-rank weights; merge it first (codetune merge) and run the merged "
                "model, or use --engine hf"
            )


def _adapter_settings(adapter: Path) -> dict[str, Any]:
    try:
        return read_adapter_config(adapter)
    except InputError as error:
        raise ConfigError(f"engine 'vllm': {error}") from None


def _unsupported_adapter(adapter: Path) -> str | None:
    """Adapters vLLM's LoRA would load wrongly or not at all: other PEFT methods, DoRA, huge ranks."""
    settings = _adapter_settings(adapter)
    kind = str(settings.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        return f"it is a {kind} adapter and vLLM runs plain LoRA only"
    if settings.get("use_dora"):
        return "it is a DoRA adapter (use_dora), whose magnitude vectors vLLM does not apply"
    rank = adapter_rank(settings)
    if rank > _VLLM_LORA_RANKS[-1]:
        return f"its rank {rank} is above vLLM's largest LoRA rank ({_VLLM_LORA_RANKS[-1]})"
    return None


def adapter_rank(settings: dict[str, Any]) -> int:
    """The largest LoRA rank in an adapter_config (``r`` and any per-module ``rank_pattern``)."""
    ranks = [int(settings.get("r") or 8), *(int(r) for r in (settings.get("rank_pattern") or {}).values())]
    return max(ranks)


def _added_token_rows(adapter: Path, ref: ModelRef, vocab_size: int | None) -> str | None:
    settings = _adapter_settings(adapter)
    saved = [m for m in settings.get("modules_to_save") or [] if m.split(".")[-1] in _EMBEDDING_MODULES]
    if saved:
        return f"it saves whole embedding modules ({', '.join(saved)}) for added tokens"
    if settings.get("trainable_token_indices"):
        return "it trains rows for added tokens (trainable_token_indices)"
    if ref.tokenizer is not None and vocab_size is not None:
        from transformers import AutoTokenizer

        size = len(AutoTokenizer.from_pretrained(ref.tokenizer))
        if size > vocab_size:
            return f"its tokenizer has {size - vocab_size} token(s) beyond the base vocabulary ({vocab_size})"
    return None


def check_vllm_params(params: Any) -> None:
    """Refuse decoding settings vLLM would run differently (checked before a model loads)."""
    if params.max_new_tokens > 0:  # rows of 0 tokens never reach vLLM
        vllm_sampling_kwargs(params, 0, set())  # raises ConfigError naming the setting


def vllm_llm_kwargs(ref: ModelRef) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for a checked model: the base, the tokenizer codetune uses, and
    LoRA sized for the adapter (vLLM's default ``max_lora_rank`` of 16 refuses a rank-32 adapter)."""
    kwargs: dict[str, Any] = {"model": ref.base, "tokenizer": ref.tokenizer_source}
    if ref.adapter is not None:
        rank = adapter_rank(_adapter_settings(Path(ref.adapter)))
        kwargs.update(
            enable_lora=True, max_loras=1, max_lora_rank=next(r for r in _VLLM_LORA_RANKS if r >= rank)
        )
    return kwargs


def vllm_context(ref: ModelRef) -> int | None:
    """The base model's context length, for the request builder's prompt trimming (as on HF)."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    return context_length(SimpleNamespace(config=AutoConfig.from_pretrained(ref.base)))


def pin_rank_gpu() -> None:
    """Under `accelerate launch`/torchrun, show this rank's vLLM engine only its own GPU (by LOCAL_RANK),
    instead of every rank building its engine on GPU 0. Call before vllm initialises CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    if local_rank >= len(devices):
        raise ConfigError(
            f"engine 'vllm' runs one engine per GPU, but rank {local_rank} has no GPU of its own "
            f"({len(devices)} visible on this node); launch at most {len(devices)} processes per node"
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[local_rank]
    # Its one GPU is now cuda:0 to this process; accelerate's barrier (merging the parts) picks
    # cuda:LOCAL_RANK, so say so. RANK (the shard of rows) is untouched.
    os.environ["LOCAL_RANK"] = "0"


__all__ = [
    "Completion",
    "VllmEngine",
    "adapter_rank",
    "check_vllm_model",
    "check_vllm_params",
    "complete_row",
    "pin_rank_gpu",
    "vllm_context",
    "vllm_llm_kwargs",
    "vllm_sampling_kwargs",
]
