"""What the vLLM path refuses before loading anything, and which GPU each `accelerate launch` rank's
engine gets. Kept apart from the engine so the checks run (and are tested) without vllm installed."""

from __future__ import annotations

import os
from pathlib import Path

from codetune.artifacts.run import read_adapter_config
from codetune.errors import ConfigError
from codetune.modeling.loading import ModelRef

# Modules whose weights in an adapter mean rows for tokens the base vocabulary lacks.
_EMBEDDING_MODULES = ("embed_tokens", "wte", "lm_head", "embed_out", "word_embeddings", "shared")


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
        reason = _added_token_rows(Path(ref.adapter), ref, getattr(config, "vocab_size", None))
        if reason:
            raise ConfigError(
                f"engine 'vllm' cannot apply the adapter in {ref.adapter}: {reason}, and vLLM's LoRA "
                "loads only the low-rank weights; merge it first (codetune merge) and run the merged "
                "model, or use --engine hf"
            )


def _added_token_rows(adapter: Path, ref: ModelRef, vocab_size: int | None) -> str | None:
    settings = read_adapter_config(adapter)
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
