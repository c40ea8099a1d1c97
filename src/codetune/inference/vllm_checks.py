"""What the vLLM path refuses before loading anything, how it builds ``vllm.LLM``, and which GPU each
`accelerate launch` rank's engine gets. Kept apart from the engine so all of it runs (and is tested)
without vllm installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from codetune.artifacts.run import read_adapter_config
from codetune.errors import ConfigError, InputError
from codetune.modeling.loading import ModelRef

# Modules whose weights in an adapter mean rows for tokens the base vocabulary lacks.
_EMBEDDING_MODULES = ("embed_tokens", "wte", "lm_head", "embed_out", "word_embeddings", "shared")
# The ranks vLLM's LoRA kernels are built for (``max_lora_rank`` must be one of them).
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


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
    from codetune.generation.engines.vllm import vllm_sampling_kwargs

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

    from codetune.generation.sequence import context_length

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
