"""LoRA on every linear layer but the LM head; the NF4 settings QLoRA loads its base with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.errors import ConfigError
from codetune.train.methods import Method, new_token_modules, register_method, task_type
from codetune.train.targets import target_modules


@register_method("lora")
class Lora(Method):
    def wrap(self, model: Any, cfg: Any, total_steps: int, new_tokens: Sequence[int] = ()) -> Any:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=target_modules(model, cfg.target_modules),
            task_type=task_type(model),
            **new_token_modules(model, new_tokens),
        )
        return get_peft_model(model, config)


def quantization_config() -> Any:
    """bitsandbytes NF4 with double quantization and bf16 compute (CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "qlora needs a CUDA GPU (bitsandbytes 4-bit); on this machine use --method lora "
            "(bitsandbytes on CPU gives wrong gradients after an eval pass)"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("qlora needs bitsandbytes: pip install 'codetune[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
