"""Logits at the target positions only (training losses, preference log-probabilities, eval loss).

The vocabulary projection is the largest matmul of a small model with a big vocabulary (Gemma 3 270M:
262,144 rows of 640), and many rows have few target tokens: feedback rows learn one suggestion after
a 256-token prompt, preference rows score only their completions, instruction rows mask their prompt.
Where the model's own code slices its hidden states by a boolean mask before the head (transformers'
``slice_logits_to_keep``), the head runs only where a target follows; elsewhere every position is
projected and the targets' rows are picked after, with the same result.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any


def _base_model(model: Any) -> Any:
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def keeps_target_positions(model: Any) -> bool:
    """Whether ``model`` takes a boolean ``(batch, length)`` mask as ``logits_to_keep``.

    Older transformers read a 2-D tensor there as positions, not a mask, so the model's own module
    must use the slicing helper that knows masks.
    """
    base = _base_model(model)
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
    module = sys.modules.get(type(base).__module__)
    return "logits_to_keep" in parameters and hasattr(module, "slice_logits_to_keep")


def target_logits(model: Any, inputs: dict[str, Any], keep: Any) -> Any:
    """``(keep.sum(), vocabulary)`` logits of the positions ``keep`` (a boolean ``(batch, length)``
    tensor) marks, in row-major order (as ``tensor[keep]`` orders them)."""
    if keeps_target_positions(model):
        return model(**inputs, use_cache=False, logits_to_keep=keep).logits
    return model(**inputs, use_cache=False).logits[keep]
