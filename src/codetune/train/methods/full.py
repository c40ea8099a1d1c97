"""Full fine-tuning: every weight trains, in fp32 master weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.train.methods import Method, register_method


@register_method("full")
class Full(Method):
    peft = False

    def wrap(self, model: Any, cfg: Any, total_steps: int, new_tokens: Sequence[int] = ()) -> Any:
        """Every weight trains. A fp16/bf16 checkpoint (transformers 5 loads dtype="auto") is upcast:
        AdamW updates smaller than a half-precision step would round away; autocast keeps compute
        in the run's precision."""
        import torch

        if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
            model = model.float()
        model.requires_grad_(True)
        return model
