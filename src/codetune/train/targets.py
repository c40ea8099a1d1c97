"""LoRA target modules per architecture, and the trainable-parameter table (the AirScript use case's)."""

from __future__ import annotations

from typing import Any


def linear_names(model: Any) -> list[str]:
    """Leaf names of every linear layer but the LM head (peft has no default for some, e.g. Starcoder2)."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = torch.nn.Linear
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: set[str] = set()
    for full_name, module in model.named_modules():
        if module is head or full_name.split(".")[-1] in {"lm_head", "embed_out", "output"}:
            continue
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            names.add(full_name.split(".")[-1])
    return sorted(names)


def target_modules(model: Any, override: list[str] | None = None) -> list[str]:
    """The user's list when given, else every linear layer but the LM head."""
    from codetune.errors import ConfigError

    names = linear_names(model)
    if not override:
        return names
    missing = [name for name in override if name not in names]
    if missing:
        raise ConfigError(
            f"target_modules {missing} are not linear layers of this model; it has: {', '.join(names)}"
        )
    return list(override)


def parameter_table(model: Any) -> dict[str, Any]:
    """trainable, total, trainable %, and the size of what a run saves (adapter or full model) in MB."""
    trainable = 0
    total = 0
    trainable_bytes = 0
    for param in model.parameters():
        count = param.numel()
        # 4-bit weights are packed two per byte: count the real parameters.
        if param.__class__.__name__ == "Params4bit":
            count *= 2
        total += count
        if param.requires_grad:
            trainable += count
            trainable_bytes += count * param.element_size()
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100.0 * trainable / max(total, 1), 4),
        "size_mb": round(trainable_bytes / 2**20, 2),
    }


def format_table(table: dict[str, Any]) -> str:
    """The table as the AirScript write-up prints it (markdown)."""
    return (
        "| trainable params | all params | trainable% | tensor size |\n|--|--|--|--|\n"
        f"| {table['trainable_params']:,} | {table['total_params']:,} | {table['trainable_pct']:.4f} "
        f"| {table['size_mb']:.2f} MB |"
    )
