"""What DPO and KTO share: LoRA, rows padded per micro-batch, completion log-probabilities, and a
reference model that is the same model with its adapter switched off (no second copy of the weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from codetune.errors import ConfigError
from codetune.modeling.logits import target_logits
from codetune.train.methods.lora import Lora


def pad(sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask`` (the loss_mask) tensors."""
    import torch

    width = max(len(ids) for ids in sequences)
    ids = [list(s) + [pad_id] * (width - len(s)) for s in sequences]
    attention = [[1] * len(s) + [0] * (width - len(s)) for s in sequences]
    completion = [list(m) + [0] * (width - len(m)) for m in masks]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(attention),
        "completion_mask": torch.tensor(completion),
    }


def completion_logps(model: Any, input_ids: Any, attention_mask: Any, completion_mask: Any) -> Any:
    """Per row, the summed log-probability of its completion tokens (``completion_mask`` 1)."""
    import torch
    import torch.nn.functional as F

    # Shift the targets, not the logits: the logits are only made where a completion token follows.
    targets = F.pad(input_ids[:, 1:], (0, 1), value=0)
    keep = F.pad(completion_mask[:, 1:], (0, 1), value=0).bool()
    logits = target_logits(model, {"input_ids": input_ids, "attention_mask": attention_mask}, keep)
    token_logps = -F.cross_entropy(logits.float(), targets[keep], reduction="none")
    rows = torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return rows.index_add(0, keep.nonzero()[:, 0], token_logps)


@contextlib.contextmanager
def reference(model: Any) -> Iterator[None]:
    """The reference policy: ``model`` (still called through its DDP/FSDP wrapper) with its adapter
    disabled and no gradients, i.e. the base the adapter started from."""
    import torch
    from accelerate.utils import extract_model_from_parallel

    with torch.no_grad(), extract_model_from_parallel(model).disable_adapter():
        yield


def mean_over_processes(value: Any) -> Any:
    """``value`` averaged over every training process (itself when there is one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / dist.get_world_size()
    return value


class Preference(Lora):
    """LoRA trained on preference rows of a ``build --format feedback`` dataset."""

    def check(self, cfg: Any) -> None:
        if cfg.preference_beta <= 0:
            raise ConfigError(f"--method {self.name} needs preference_beta > 0")
