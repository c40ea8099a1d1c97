"""Batched generation with the KV cache: length-sorted batches, stop sequences, greedy or sampling.

First version by the lead; the inference helper owns and extends it (keep ``generate``'s signature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    """Decoding settings shared by eval, generate and serve."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop sequence; returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    params: SamplingParams | None = None,
    *,
    batch_size: int = 8,
) -> list[str]:
    """Complete each prompt; returns the new text only, in the prompts' order."""
    import torch

    params = params or SamplingParams()
    if params.seed is not None:
        torch.manual_seed(params.seed)
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = [encoded[i] or [tokenizer.eos_token_id] for i in idx]
        width = max(len(r) for r in rows)
        # Left padding so that every row's next token sits at the same position.
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": not params.greedy,
            "pad_token_id": pad_id,
            "eos_token_id": tokenizer.eos_token_id,
            "repetition_penalty": params.repetition_penalty,
        }
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out if is_seq2seq else out[:, width:]
        for row, i in enumerate(idx):
            text = tokenizer.decode(new[row], skip_special_tokens=True)
            outputs[i] = cut_at_stop(text, params.stop)[0]
    return outputs
