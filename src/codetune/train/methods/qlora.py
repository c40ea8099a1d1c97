"""QLoRA: LoRA over a 4-bit NF4 base (loaded quantized by the recipe, CUDA + bitsandbytes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.train.methods import register_method
from codetune.train.methods.lora import Lora


@register_method("qlora")
class Qlora(Lora):
    quantized = True

    def wrap(self, model: Any, cfg: Any, total_steps: int, new_tokens: Sequence[int] = ()) -> Any:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        return super().wrap(model, cfg, total_steps, new_tokens)
